//! Random identifiers from the kernel's random pool.

use std::io;

/// Fills `buf` from the kernel's random pool (`getrandom(2)`), retrying interrupted and short reads.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most rest.len() bytes into rest, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// `bytes` random bytes as `2 * bytes` lowercase hex digits.
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new container or sandbox id: 64 random hex digits, as the CRI's ids are.
pub fn new_id() -> io::Result<String> {
    random_hex(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_id_is_64_hex_digits_and_differs_each_time() {
        let a = new_id().expect("id");
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, new_id().expect("id"));
    }

    #[test]
    fn random_hex_has_two_digits_per_byte() {
        assert_eq!(random_hex(6).expect("hex").len(), 12);
        assert_eq!(random_hex(0).expect("hex"), "");
    }
}
