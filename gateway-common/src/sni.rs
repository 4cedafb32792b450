//! The SNI fingerprint that keys [`maps::HOST_POLICY`](crate::maps::HOST_POLICY).
//!
//! The program does not copy the host name into a 256-byte map key: it hashes
//! the name, lowercased, eight bytes at a time, into two independent 64-bit
//! values. The first is the map key; the second is stored in the value and
//! checked, so a policy applies only when both match. Userspace computes the
//! same function over the configured names.

/// Words of eight bytes that hold the longest SNI (255 bytes).
pub const SNI_WORDS: usize = 32;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const SEEDS: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];
const MULTIPLIERS: [u64; 2] = [0xff51_afd7_ed55_8ccd, 0xc4ce_b9fe_1a85_ec53];

/// Lowercases the ASCII letters among eight bytes at once; other bytes are unchanged.
#[inline(always)]
pub fn lower_ascii(w: u64) -> u64 {
    let low7 = w & !HIGH;
    let at_least_a = (low7 + ONES * (0x80 - b'A' as u64)) & HIGH;
    let above_z = (low7 + ONES * (0x80 - b'Z' as u64 - 1)) & HIGH;
    let upper = at_least_a & !above_z & !w;
    w | (upper >> 2)
}

/// Mask that keeps the first `n` bytes (little-endian) of a word, `n` ≥ 1.
#[inline(always)]
pub fn keep_bytes(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// The hash state before any word.
pub const START: [u64; 2] = SEEDS;

/// Absorbs one word (already lowercased and masked).
#[inline(always)]
pub fn absorb(h: [u64; 2], w: u64) -> [u64; 2] {
    [
        (h[0] ^ w).wrapping_mul(MULTIPLIERS[0]).rotate_left(29),
        (h[1] ^ w).wrapping_mul(MULTIPLIERS[1]).rotate_left(37),
    ]
}

/// Finishes the hash of a name of `len` bytes: `[map key, check]`.
#[inline(always)]
pub fn finish(h: [u64; 2], len: usize) -> [u64; 2] {
    [
        mix(h[0] ^ len as u64),
        mix(h[1] ^ (len as u64).rotate_left(32)),
    ]
}

/// A strong 64-bit finaliser (MurmurHash3's).
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(MULTIPLIERS[0]);
    x ^= x >> 33;
    x = x.wrapping_mul(MULTIPLIERS[1]);
    x ^ (x >> 33)
}

/// The fingerprint of a host name, as the program computes it: `[map key, check]`.
pub fn fingerprint(name: &[u8]) -> [u64; 2] {
    let mut h = START;
    for chunk in name.chunks(8) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        h = absorb(h, lower_ascii(u64::from_le_bytes(bytes)));
    }
    finish(h, name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_letters_only() {
        let all: [u8; 256] = core::array::from_fn(|i| i as u8);
        for chunk in all.chunks(8) {
            let w = lower_ascii(u64::from_le_bytes(chunk.try_into().unwrap()));
            for (i, &b) in chunk.iter().enumerate() {
                assert_eq!(
                    (w >> (i * 8)) as u8,
                    b.to_ascii_lowercase(),
                    "byte {b:#04x}"
                );
            }
        }
    }

    #[test]
    fn fingerprints_ignore_case_and_separate_names() {
        assert_eq!(
            fingerprint(b"API.Example.COM"),
            fingerprint(b"api.example.com")
        );
        assert_ne!(
            fingerprint(b"api.example.com"),
            fingerprint(b"api.example.co")
        );
        assert_ne!(fingerprint(b"a"), fingerprint(b"a\0"));
        assert_ne!(fingerprint(b"abcdefgh"), fingerprint(b"abcdefgh\0"));
    }
}
