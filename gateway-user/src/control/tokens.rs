//! Scoped API tokens: each holds permission groups named as the reference
//! service names them, is stored as the SHA-256 of its secret (compared in
//! constant time) and may expire. The first-run token (`meta.token_sha256`,
//! replaced by `gateway rotate-token`) holds every permission.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pki;

/// A permission group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Hostnames, CAs, associations and client certificates: read.
    #[serde(rename = "SSL and Certificates Read")]
    SslRead,
    /// … and change.
    #[serde(rename = "SSL and Certificates Write")]
    SslWrite,
    /// The zone's TLS settings: read.
    #[serde(rename = "Zone Settings Read")]
    ZoneRead,
    /// … and change.
    #[serde(rename = "Zone Settings Write")]
    ZoneWrite,
    /// Firewall rules: read.
    #[serde(rename = "Firewall Services Read")]
    FirewallRead,
    /// … and change.
    #[serde(rename = "Firewall Services Write")]
    FirewallWrite,
    /// API tokens: read.
    #[serde(rename = "API Tokens Read")]
    TokensRead,
    /// … and create, roll and delete.
    #[serde(rename = "API Tokens Write")]
    TokensWrite,
    /// The audit log.
    #[serde(rename = "Account Settings Read")]
    AuditRead,
    /// The dashboard's charts of both layers' counters.
    #[serde(rename = "Analytics Read")]
    AnalyticsRead,
}

impl Permission {
    /// Every permission group.
    pub const ALL: [Permission; 10] = [
        Permission::SslRead,
        Permission::SslWrite,
        Permission::ZoneRead,
        Permission::ZoneWrite,
        Permission::FirewallRead,
        Permission::FirewallWrite,
        Permission::TokensRead,
        Permission::TokensWrite,
        Permission::AuditRead,
        Permission::AnalyticsRead,
    ];

    /// Its name, as the reference's permission group is called.
    pub fn name(self) -> &'static str {
        match self {
            Permission::SslRead => "SSL and Certificates Read",
            Permission::SslWrite => "SSL and Certificates Write",
            Permission::ZoneRead => "Zone Settings Read",
            Permission::ZoneWrite => "Zone Settings Write",
            Permission::FirewallRead => "Firewall Services Read",
            Permission::FirewallWrite => "Firewall Services Write",
            Permission::TokensRead => "API Tokens Read",
            Permission::TokensWrite => "API Tokens Write",
            Permission::AuditRead => "Account Settings Read",
            Permission::AnalyticsRead => "Analytics Read",
        }
    }

    /// Its id: fixed, derived from its name.
    pub fn id(self) -> String {
        pki::sha256_hex(self.name().as_bytes())[..32].to_string()
    }

    /// The permission group with this id or name.
    pub fn find(id_or_name: &str) -> Option<Permission> {
        Permission::ALL
            .into_iter()
            .find(|p| p.id() == id_or_name || p.name().eq_ignore_ascii_case(id_or_name))
    }

    /// Write implies read: whether holding `self` grants `needed`.
    fn grants(self, needed: Permission) -> bool {
        self == needed
            || matches!(
                (self, needed),
                (Permission::SslWrite, Permission::SslRead)
                    | (Permission::ZoneWrite, Permission::ZoneRead)
                    | (Permission::FirewallWrite, Permission::FirewallRead)
                    | (Permission::TokensWrite, Permission::TokensRead)
            )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An API token (its secret is never stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its id.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// SHA-256 (hex) of its secret.
    pub secret_sha256: String,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// When it was made (Unix seconds).
    pub issued_on: i64,
    /// When it last changed.
    pub modified_on: i64,
    /// When it stops working, if ever.
    pub expires_on: Option<i64>,
}

/// Who made a call: the token's id, name and permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's id (`first-run` for the first-run token).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its permission groups.
    pub permissions: Vec<Permission>,
}

/// The id under which the first-run token is listed.
pub const FIRST_RUN_ID: &str = "first-run";

impl Caller {
    /// Whether the token may do what `needed` names.
    pub fn may(&self, needed: Permission) -> bool {
        self.permissions.iter().any(|p| p.grants(needed))
    }
}

/// A new secret: 32 random bytes, hex.
pub fn new_secret() -> anyhow::Result<String> {
    let mut secret = [0u8; 32];
    boring::rand::rand_bytes(&mut secret)?;
    Ok(pki::hex(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_grants_read_and_names_and_ids_find_groups() {
        let writer = Caller {
            id: "t".into(),
            name: "t".into(),
            permissions: vec![Permission::SslWrite],
        };
        assert!(writer.may(Permission::SslRead) && writer.may(Permission::SslWrite));
        assert!(!writer.may(Permission::ZoneRead));
        let reader = Caller {
            permissions: vec![Permission::SslRead],
            ..writer
        };
        assert!(!reader.may(Permission::SslWrite));
        for p in Permission::ALL {
            assert_eq!(Permission::find(&p.id()), Some(p));
            assert_eq!(Permission::find(p.name()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        assert_eq!(Permission::find("Root"), None);
    }
}
