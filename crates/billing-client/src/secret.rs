//! Credentials kept out of logs: [`Secret`] (a string whose `Debug` is `<redacted>`) and
//! [`read_secret_file`], which reads a key or password file and warns when other users may
//! read it.
//!
//! Why: a shared key or password in a `Debug` dump of a config, a panic message or a log line
//! lets whoever reads the log forge billing records. Invariant: no `Debug`/`Display` of a type
//! of this crate shows a secret's bytes; only [`Secret::expose`] does.

use std::fmt;
use std::path::Path;

/// A string that must not be shown: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the code that must use it (the handshake).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

/// Reads a file holding one secret (a shared key): its contents without the trailing line
/// end. Logs a warning (with `tracing`) when the file is readable by its group or others.
///
/// # Errors
/// A message naming the file when it cannot be read, is not UTF-8, or holds nothing but
/// white space. The message never contains the file's contents.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = read_private_file(path)?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.trim().is_empty() {
        return Err(format!("{}: the file is empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// Reads a file of credentials as UTF-8, warning (with `tracing`) when its group or others
/// may read it.
///
/// # Errors
/// A message naming the file when it cannot be read or is not UTF-8.
pub fn read_private_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    warn_if_shared(path);
    String::from_utf8(bytes).map_err(|_| format!("{}: the file is not UTF-8", path.display()))
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "credentials file is readable by its group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn key_files_lose_their_line_end_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "k e y\r\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "k e y");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret_file(&p).unwrap_err().contains("empty"));
        assert!(read_secret_file(&dir.path().join("none")).is_err());
    }
}
