//! The caller's view of usage: [`AmountType`], [`Amounts`], [`Metadata`] and [`Event`], with
//! the Go client's field names when serialized.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind of billable amount. An open set: any non-empty string is a type; the four the Go
/// client named are constants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AmountType(Cow<'static, str>);

impl AmountType {
    /// Seconds of container run time.
    pub const CONTAINER_SECONDS: AmountType = AmountType::from_static("container-seconds");
    /// Seconds of node run time.
    pub const NODE_SECONDS: AmountType = AmountType::from_static("node-seconds");
    /// Seconds of Weave Net run time.
    pub const WEAVENET_SECONDS: AmountType = AmountType::from_static("weavenet-seconds");
    /// Samples ingested.
    pub const SAMPLES: AmountType = AmountType::from_static("samples");

    /// A type named by a static string, usable in constants.
    pub const fn from_static(name: &'static str) -> Self {
        AmountType(Cow::Borrowed(name))
    }

    /// The type's name as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AmountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AmountType {
    fn from(s: &str) -> Self {
        AmountType(Cow::Owned(s.to_owned()))
    }
}

impl From<String> for AmountType {
    fn from(s: String) -> Self {
        AmountType(Cow::Owned(s))
    }
}

/// Amounts of one event by type (the Go `Amounts map[AmountType]int64`). Ordered, so records
/// come out in a stable order.
pub type Amounts = BTreeMap<AmountType, i64>;

/// Free-form metadata for auditability (the Go `map[string]string`). Keep it small: prefer a
/// report id over the report.
pub type Metadata = BTreeMap<String, String>;

/// One billable event, serialized with the Go client's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The caller's dedupe key; each record's key is this plus `:` plus the amount type.
    pub unique_key: String,
    /// Internal (numeric) instance id, not the external name.
    pub internal_instance_id: String,
    /// When the usage happened; decides its billing bucket.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub occurred_at: SystemTime,
    /// The amounts by type.
    pub amounts: Amounts,
    /// Audit metadata.
    pub metadata: Metadata,
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::rfc3339::rfc3339(*t))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let s = <Cow<'de, str>>::deserialize(d)?;
    crate::rfc3339::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}
