//! Ray ids: a 64-bit id per request, written as 16 hex digits in the access
//! log's `RayID` and in the `cf-ray` header, both to the origin (replacing any
//! the client sent) and back to the client.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue};

/// The header carrying the ray id, to the origin and to the client.
pub const RAY_HEADER: HeaderName = HeaderName::from_static("cf-ray");

/// Makes ray ids: a counter from a random start, mixed by a bijection, so
/// ids never repeat within a process and look unrelated to each other.
pub struct RayIds {
    key: u64,
    next: AtomicU64,
}

impl RayIds {
    /// A generator with a random key.
    pub fn new() -> RayIds {
        let mut seed = [0u8; 16];
        if boring::rand::rand_bytes(&mut seed).is_err() {
            // Not secret: only distinct between processes; the time will do.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            seed = now.to_le_bytes();
        }
        let (key, start) = seed.split_at(8);
        RayIds {
            key: u64::from_le_bytes(key.try_into().unwrap_or_default()),
            next: AtomicU64::new(u64::from_le_bytes(start.try_into().unwrap_or_default())),
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        mix(self.next.fetch_add(1, Ordering::Relaxed) ^ self.key)
    }
}

impl Default for RayIds {
    fn default() -> Self {
        RayIds::new()
    }
}

/// SplitMix64's finaliser: a bijection of u64 that spreads every bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A ray id as it is written: 16 lower-case hex digits.
pub fn hex(id: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The header value of a ray id.
pub fn header_value(id: u64) -> HeaderValue {
    HeaderValue::from_bytes(&hex(id)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_written_as_hex() {
        let rays = RayIds::new();
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| rays.next()).collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(header_value(0xff).to_str().unwrap(), "00000000000000ff");
    }
}
