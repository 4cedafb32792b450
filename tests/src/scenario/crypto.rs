//! The machine's own crypto bound for one TLS 1.3 mTLS handshake with ECDSA
//! P-256 certificates, from `openssl speed`: the server signs once (its
//! CertificateVerify), verifies once (the client's) and does one X25519 key
//! exchange; anything a server does beyond that is overhead.

use anyhow::Context;

/// Operations per second on one core, from `openssl speed -mr`.
#[derive(Clone, Copy, Debug)]
pub struct CryptoSpeed {
    /// ECDSA P-256 signatures.
    pub sign: f64,
    /// ECDSA P-256 verifications.
    pub verify: f64,
    /// X25519 key exchanges.
    pub x25519: f64,
}

impl CryptoSpeed {
    /// Measures with `openssl speed` (one second per primitive, one core).
    pub fn measure() -> anyhow::Result<CryptoSpeed> {
        let out = crate::lab::run(std::process::Command::new("taskset").args([
            "-c",
            "0",
            "openssl",
            "speed",
            "-mr",
            "-seconds",
            "1",
            "ecdsap256",
            "ecdhx25519",
        ]))?;
        parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Full mTLS handshakes per second one core could do with nothing but this crypto.
    pub fn handshakes_bound(&self) -> f64 {
        1.0 / (1.0 / self.sign + 1.0 / self.verify + 1.0 / self.x25519)
    }
}

/// Reads `+F4:i:256:SIGN/s:VERIFY/s` (ECDSA) and `+F5:i:253:OPS/s:...` (ECDH) lines.
fn parse(text: &str) -> anyhow::Result<CryptoSpeed> {
    let fields = |tag: &str| -> Option<Vec<f64>> {
        let line = text.lines().find(|l| l.starts_with(tag))?;
        Some(
            line.split(':')
                .skip(3)
                .filter_map(|f| f.parse().ok())
                .collect(),
        )
    };
    let ecdsa = fields("+F4:").context("openssl speed printed no ECDSA line (+F4)")?;
    let ecdh = fields("+F5:").context("openssl speed printed no ECDH line (+F5)")?;
    let (sign, verify, x25519) = match (ecdsa.as_slice(), ecdh.first()) {
        ([s, v, ..], Some(x)) => (*s, *v, *x),
        _ => anyhow::bail!("openssl speed: unreadable figures in {text:?}"),
    };
    anyhow::ensure!(
        sign > 0.0 && verify > 0.0 && x25519 > 0.0,
        "openssl speed: a rate of zero in {text:?}"
    );
    Ok(CryptoSpeed {
        sign,
        verify,
        x25519,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openssl_speed_machine_readable_output() {
        let s = parse("+DT:ecdsa:1:256\n+F4:3:256:39920.000000:12874.000000\n+F5:22:253:27437.000000:0.000036\n")
            .unwrap();
        assert_eq!((s.sign, s.verify, s.x25519), (39920.0, 12874.0, 27437.0));
        let bound = s.handshakes_bound();
        assert!((7180.0..7190.0).contains(&bound), "{bound}");
        assert!(parse("+F4:3:256:0:1\n+F5:22:253:5:0\n").is_err());
        assert!(parse("nothing").is_err());
    }
}
