//! Query-string filters of `/api/v1/usage` and the dashboard: the same bounds, filters and
//! checks as `billing report` (`--from`, `--to`, `--instance`, `--type`, `--by`).
//!
//! Invariants: a bound is parsed by [`crate::parse_report_time`] (RFC 3339 or a UTC date) and
//! the range checked by [`UsageQuery::check`] before any query, so a refused range is the
//! caller's error (400) whatever the store holds; an empty value (`from=` as an HTML form
//! sends it) means "not given"; for a name given twice the last value counts; unknown names
//! are ignored.

use std::time::SystemTime;

use crate::{Granularity, UsageQuery};

/// The filters as given (for refilling the dashboard's form), empty values dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filters {
    pub from: Option<String>,
    pub to: Option<String>,
    pub instance: Option<String>,
    pub amount_type: Option<String>,
    pub by: Option<String>,
    /// Whether `from` or `to` was named at all (even empty): the dashboard's default period
    /// applies only when neither was.
    pub names_range: bool,
}

impl Filters {
    /// Reads the pairs of a query string.
    pub(crate) fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut f = Filters::default();
        for (name, value) in pairs {
            let value = (!value.is_empty()).then(|| value.clone());
            match name.as_str() {
                "from" => {
                    f.from = value;
                    f.names_range = true;
                }
                "to" => {
                    f.to = value;
                    f.names_range = true;
                }
                "instance" => f.instance = value,
                "type" => f.amount_type = value,
                "by" => f.by = value,
                _ => {}
            }
        }
        f
    }

    /// The usage query these filters ask for (`by` defaults to `default_by`).
    ///
    /// # Errors
    /// The message of a bound that does not parse, of an unknown `by`, or of the range
    /// [`UsageQuery::check`] refuses.
    pub(crate) fn query(&self, default_by: Granularity) -> Result<UsageQuery, String> {
        let time = |name: &str, v: &Option<String>| -> Result<Option<SystemTime>, String> {
            v.as_deref()
                .map(|s| crate::parse_report_time(s).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let by = match self.by.as_deref() {
            None => default_by,
            Some("hour") => Granularity::Hour,
            Some("day") => Granularity::Day,
            Some("month") => Granularity::Month,
            Some("instance") => Granularity::Instance,
            Some(other) => {
                return Err(format!(
                    "by: {other:?} is not a bucket size: use hour, day, month or instance"
                ));
            }
        };
        let query = UsageQuery {
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
            instance: self.instance.clone(),
            amount_type: self.amount_type.clone(),
            by,
        };
        query.check().map_err(|e| e.to_string())?;
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_filters_as_billing_report_does() {
        let f = Filters::from_pairs(&pairs(&[
            ("from", "2026-12-01"),
            ("to", "2026-12-02T10:00:00Z"),
            ("type", "samples"),
            ("instance", ""),
            ("by", "day"),
            ("other", "x"),
        ]));
        assert!(f.names_range);
        assert_eq!(f.instance, None);
        let q = f.query(Granularity::Hour).unwrap();
        assert_eq!(q.by, Granularity::Day);
        assert_eq!(q.amount_type.as_deref(), Some("samples"));
        assert_eq!(
            q.from,
            Some(billing_schema::parse_rfc3339("2026-12-01T00:00:00Z").unwrap())
        );
        let inside = Filters::from_pairs(&pairs(&[("from", "2026-12-01T10:30:00Z")]));
        let e = inside.query(Granularity::Hour).unwrap_err();
        assert!(e.contains("--from 2026-12-01T10:00:00Z"), "{e}");
        let empty = Filters::from_pairs(&pairs(&[("from", "2026-12-02"), ("to", "2026-12-01")]));
        assert!(
            empty
                .query(Granularity::Hour)
                .unwrap_err()
                .contains("empty range")
        );
        let bad = Filters::from_pairs(&pairs(&[("by", "week")]));
        assert!(
            bad.query(Granularity::Hour)
                .unwrap_err()
                .contains("hour, day, month or instance")
        );
        let bad = Filters::from_pairs(&pairs(&[("to", "yesterday")]));
        assert!(
            bad.query(Granularity::Hour)
                .unwrap_err()
                .starts_with("to: ")
        );
        assert!(!Filters::from_pairs(&[]).names_range);
    }
}
