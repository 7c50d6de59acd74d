//! Sorting a store's errors into errors about one record's data and everything else, and the
//! PostgreSQL error text that [`StoreError`]'s Display shows.
//!
//! Why: a frame is one transaction, so one record the database refuses would fail the whole
//! chunk, and the client would resend it, with every innocent record in it, forever. A store
//! therefore retries a frame record by record (each in a savepoint) when, and only when, its
//! transaction failed for a reason that lies in the data ([`is_about_data`]): then the
//! refusal follows the record, which is quarantined as `store_rejected`, and the rest is
//! stored. Any other failure (connection, disk, lock timeout, deadlock, a broken schema, an
//! operator's trigger raising a plain exception) would fail every record alike: the frame
//! fails, is not acked, and the client resends it later.
//!
//! Data errors:
//! - PostgreSQL: SQLSTATE class `22` (data exception: out of range, invalid text, NUL, ...)
//!   and class `23` (integrity constraint violation: check, not null, unique, ...);
//! - SQLite: `SQLITE_CONSTRAINT` (every extended code: `CHECK`, `NOTNULL`, `DATATYPE` of a
//!   STRICT table, `TRIGGER` from `RAISE(ABORT, ...)`), `SQLITE_MISMATCH`, `SQLITE_TOOBIG`;
//!   rusqlite's own conversion failures of a value (to or from SQL);
//! - [`StoreError::Overflow`]: a sum beyond 128 bits.
//!
//! Everything else, SQLite's generic `SQLITE_ERROR` included (a missing table or a bad
//! statement is not about a record), is not.

use crate::StoreError;

/// Whether `e` is a database's refusal of the data it was given (see the module docs).
pub(crate) fn is_about_data(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => e
            .as_db_error()
            .is_some_and(|db| matches!(db.code().code().get(..2), Some("22" | "23"))),
        StoreError::Sqlite(e) => sqlite_data_error(e),
        StoreError::Overflow => true,
        _ => false,
    }
}

fn sqlite_data_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(f.code, ConstraintViolation | TypeMismatch | TooBig)
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    }
}

/// A PostgreSQL error as `SQLSTATE message[: detail]` when the server refused something (e.g.
/// `22003 numeric value out of range`), else the client's text with its cause (e.g. `error
/// connecting to server: Connection refused (os error 111)`). tokio-postgres' own Display of a
/// server error is only `db error`.
pub(crate) fn postgres_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some("x".into()),
        ))
    }

    #[test]
    fn sqlite_constraint_mismatch_and_too_big_are_about_data() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CONSTRAINT_TRIGGER,
            ffi::SQLITE_CONSTRAINT_DATATYPE,
            ffi::SQLITE_CONSTRAINT_NOTNULL,
            ffi::SQLITE_MISMATCH,
            ffi::SQLITE_TOOBIG,
        ] {
            assert!(is_about_data(&sqlite(code)), "{code}");
        }
        for code in [
            ffi::SQLITE_ERROR,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_CORRUPT,
        ] {
            assert!(!is_about_data(&sqlite(code)), "{code}");
        }
        assert!(is_about_data(&StoreError::Overflow));
        assert!(!is_about_data(&StoreError::Closed));
        assert!(!is_about_data(&StoreError::Io(std::io::Error::other(
            "disk"
        ))));
    }
}
