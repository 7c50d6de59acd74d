//! The `postgres://` store URL: which database, which schema, how many connections.
//!
//! Why its own module: the URL carries this crate's parameters (`schema`, `pool_size`) next to
//! tokio-postgres' own, and must be split, checked and displayed without its password before a
//! store is opened. Invariants: a parsed [`PgUrl`] always holds a schema name that is safe to
//! quote as an identifier (letters, digits, `_`), a positive pool size, and a connection string
//! tokio-postgres accepts; [`PgUrl`]'s `Display` never shows the password.

use crate::{StoreError, StoreUrlError};

/// Connections a store opens when the URL does not say `pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// Longest schema name PostgreSQL keeps.
const MAX_SCHEMA_BYTES: usize = 63;

/// A parsed `postgres://` store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// As given (may hold a password; never displayed).
    full: String,
    /// What tokio-postgres parses: `full` without this crate's parameters.
    conn: String,
    schema: Option<String>,
    pool_size: usize,
}

impl PgUrl {
    /// The schema the tables live in, when the URL names one.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Connections the store may open.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The same URL with another schema.
    ///
    /// # Errors
    /// When `schema` is not a valid name.
    pub fn with_schema(&self, schema: &str) -> Result<Self, StoreUrlError> {
        check_schema(schema)?;
        let mut u = self.clone();
        u.schema = Some(schema.to_string());
        let (base, query) = u.full.split_once('?').unwrap_or((&u.full, ""));
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("schema="))
            .map(str::to_string)
            .collect();
        params.insert(0, format!("schema={schema}"));
        u.full = format!("{base}?{}", params.join("&"));
        Ok(u)
    }

    /// The tokio-postgres configuration (this crate's parameters removed).
    pub(super) fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        Ok(self.conn.parse()?)
    }
}

fn check_schema(s: &str) -> Result<(), StoreUrlError> {
    let mut chars = s.chars();
    let ok = s.len() <= MAX_SCHEMA_BYTES
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreUrlError::Postgres(format!(
            "schema {s:?} must be letters, digits and _ (not first), at most {MAX_SCHEMA_BYTES} bytes"
        )))
    }
}

impl std::str::FromStr for PgUrl {
    type Err = StoreUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, query) = s.split_once('?').unwrap_or((s, ""));
        let mut schema = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut rest = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("schema", name)) => {
                    check_schema(name)?;
                    schema = Some(name.to_string());
                }
                Some(("pool_size", n)) => {
                    pool_size = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        StoreUrlError::Postgres(format!(
                            "pool_size {n:?} is not a positive integer"
                        ))
                    })?;
                }
                _ => rest.push(param),
            }
        }
        let conn = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        conn.parse::<tokio_postgres::Config>()
            .map_err(|e| StoreUrlError::Postgres(e.to_string()))?;
        Ok(PgUrl {
            full: s.to_string(),
            conn,
            schema,
            pool_size,
        })
    }
}

impl std::fmt::Display for PgUrl {
    /// The URL with its password, if any, replaced by `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.full;
        let Some(start) = s.find("://").map(|i| i + 3) else {
            return f.write_str(s);
        };
        let end = s[start..].find(['/', '?']).map_or(s.len(), |i| start + i);
        let authority = &s[start..end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let user_end = start + authority[..at].find(':').unwrap_or(at);
                write!(f, "{}:***{}", &s[..user_end], &s[start + at..])
            }
            _ => f.write_str(s),
        }
    }
}
