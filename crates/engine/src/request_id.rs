//! Request ids for requests that arrive without an `x-request-id`.
//!
//! An id is 128 bits written as a UUID (8-4-4-4-12 hex digits): 64 bits drawn once per process
//! from the operating system's random source (through std's `RandomState`), then a 64-bit
//! counter. Ids are unique within the process and unlikely to repeat across processes, and
//! making one costs an atomic increment, not a system call per request (as a v4 UUID from
//! `getrandom` would).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PREFIX: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn prefix() -> u64 {
    *PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish()
    })
}

/// A new request id as a header value, written without the formatting machinery (it runs
/// for every request that arrives without one).
pub fn next_value() -> http::HeaderValue {
    let bytes = next_bytes();
    http::HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| http::HeaderValue::from_static("-"))
}

/// 32 hex digits in 8-4-4-4-12 groups: the prefix, then the counter.
fn next_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id = (u128::from(prefix()) << 64) | u128::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut out = [b'-'; 36];
    let mut digit = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        let shift = 124 - 4 * digit;
        *slot = HEX[((id >> shift) & 0xf) as usize];
        digit += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let a = super::next_value().to_str().unwrap().to_string();
        let b = super::next_value().to_str().unwrap().to_string();
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{a}");
        assert_eq!(a[..23], b[..23], "one process prefix");
    }
}
