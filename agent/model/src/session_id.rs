//! Session ids: the one generator every session (exec, the proxy's defaults) takes its id from.

use crate::Timestamp;

/// A fresh session id: 12 lowercase base32 characters from 60 random bits (e.g. `k3f9x2ab7c1q`).
/// Short enough to lead the call and event ids built on it, random enough to be unique across
/// every exec process of every host writing one store.
pub fn new_session_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let mut bits = u64::from_le_bytes(bytes);
    if usize::try_from(n).ok() != Some(bytes.len()) {
        // No entropy source (a very early boot): time and pid still differ between processes.
        let nanos = Timestamp::now().unix_nanos().cast_unsigned();
        bits = nanos.rotate_left(20) ^ u64::from(std::process::id());
    }
    (0..12)
        .map(|i| char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_short_distinct_and_safe() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
