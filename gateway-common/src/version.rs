//! TLS protocol versions as they appear on the wire.

/// The SSL 2.0 ClientHello format (also used by SSLv2-compatible hellos).
pub const SSL2: u16 = 0x0002;
/// SSL 3.0.
pub const SSL3: u16 = 0x0300;
/// TLS 1.0.
pub const TLS1_0: u16 = 0x0301;
/// TLS 1.1.
pub const TLS1_1: u16 = 0x0302;
/// TLS 1.2.
pub const TLS1_2: u16 = 0x0303;
/// TLS 1.3.
pub const TLS1_3: u16 = 0x0304;

/// True for the reserved GREASE values (RFC 8701): both bytes equal, low nibble 0xA.
#[inline(always)]
pub const fn is_grease(v: u16) -> bool {
    (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values_are_recognised() {
        for hi in 0..16u16 {
            let v = (hi << 12) | 0x0a00 | (hi << 4) | 0x0a;
            assert!(is_grease(v), "{v:#06x}");
        }
        assert!(!is_grease(TLS1_3));
        assert!(!is_grease(0x0a1a));
        assert!(!is_grease(0x1a0a));
    }
}
