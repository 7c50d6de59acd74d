//! The machine's host name, the default hostname of both sides of the handshake (fluentd's
//! default too: `Socket.gethostname`).

/// This machine's host name, from `gethostname(2)`.
///
/// # Errors
/// The system call failed, or the name is not UTF-8 or is empty.
pub fn local_hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid and writable for its whole length during the call.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..len])
        .map_err(|_| std::io::Error::other("the host name is not UTF-8"))?;
    if name.is_empty() {
        return Err(std::io::Error::other("the host name is empty"));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_name_is_readable() {
        let name = super::local_hostname().unwrap();
        assert!(!name.is_empty() && !name.contains('\0'));
    }
}
