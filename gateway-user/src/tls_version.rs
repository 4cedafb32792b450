//! TLS protocol versions as operators write them ("1.0" … "1.3").

use std::{fmt, str::FromStr};

use gateway_common::version;
use serde::{Deserialize, Serialize};

/// A TLS version that can be configured as a minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TlsVersion {
    /// TLS 1.0
    Tls10,
    /// TLS 1.1
    Tls11,
    /// TLS 1.2
    Tls12,
    /// TLS 1.3
    Tls13,
}

impl TlsVersion {
    /// Every configurable version, lowest first.
    pub const ALL: [TlsVersion; 4] = [Self::Tls10, Self::Tls11, Self::Tls12, Self::Tls13];

    /// Its position in [`TlsVersion::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The version's value on the wire (0x0301 … 0x0304).
    pub const fn wire(self) -> u16 {
        match self {
            Self::Tls10 => version::TLS1_0,
            Self::Tls11 => version::TLS1_1,
            Self::Tls12 => version::TLS1_2,
            Self::Tls13 => version::TLS1_3,
        }
    }

    /// The operator's spelling: "1.0" … "1.3".
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tls10 => "1.0",
            Self::Tls11 => "1.1",
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }
}

/// Names a version seen on the wire: "1.0" … "1.3", "ssl3", "ssl2", or hex for others.
pub fn wire_name(v: u16) -> String {
    match v {
        version::SSL2 => "ssl2".into(),
        version::SSL3 => "ssl3".into(),
        version::TLS1_0 => "1.0".into(),
        version::TLS1_1 => "1.1".into(),
        version::TLS1_2 => "1.2".into(),
        version::TLS1_3 => "1.3".into(),
        other => format!("{other:#06x}"),
    }
}

/// Error for a version string that is not one of "1.0", "1.1", "1.2", "1.3".
#[derive(Debug, thiserror::Error)]
#[error("invalid TLS version {0:?}: expected one of 1.0, 1.1, 1.2, 1.3")]
pub struct InvalidTlsVersion(pub String);

impl FromStr for TlsVersion {
    type Err = InvalidTlsVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s.trim())
            .ok_or_else(|| InvalidTlsVersion(s.to_string()))
    }
}

impl TryFrom<String> for TlsVersion {
    type Error = InvalidTlsVersion;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TlsVersion> for String {
    fn from(v: TlsVersion) -> String {
        v.as_str().to_string()
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_version() {
        for v in TlsVersion::ALL {
            assert_eq!(v.as_str().parse::<TlsVersion>().unwrap(), v);
        }
        assert!(TlsVersion::Tls10 < TlsVersion::Tls13);
    }

    #[test]
    fn rejects_unknown_versions_with_a_clear_message() {
        let err = "1.4".parse::<TlsVersion>().unwrap_err().to_string();
        assert!(
            err.contains("1.4") && err.contains("1.0, 1.1, 1.2, 1.3"),
            "{err}"
        );
        assert!("tls1.2".parse::<TlsVersion>().is_err());
    }
}
