//! What the store keeps for ACME: the zone's ACME settings and account, and
//! each `acme` hostname's order state, shaped like the reference's custom
//! hostname `ssl` object (`method`, `status`, `validation_errors`,
//! `certificate_authority`).

use serde::{Deserialize, Serialize};

/// The zone's ACME settings (`zones/{id}/settings/acme`) and its account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeZone {
    /// The directory URL (HTTPS), e.g. Let's Encrypt's.
    pub directory: String,
    /// Contact URLs (`mailto:…`).
    pub contact: Vec<String>,
    /// A PEM file the directory's HTTPS certificate is verified against (a
    /// test server's); none: the system's roots.
    #[serde(default)]
    pub directory_ca: Option<String>,
    /// A PEM file of the roots an issued chain must verify to before it is
    /// installed; none: not checked.
    #[serde(default)]
    pub roots: Option<String>,
    /// Renew this many seconds after issuance; none: at 2/3 of the lifetime.
    #[serde(default)]
    pub renew_after_secs: Option<i64>,
    /// The account key (PEM), made at the first order.
    #[serde(default)]
    pub account_key: Option<String>,
}

/// How the ACME server validates a hostname.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeMethod {
    /// TLS-ALPN-01, answered by the terminator.
    #[serde(rename = "tls-alpn")]
    TlsAlpn,
}

/// An `acme` hostname's certificate status (the reference's `ssl.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SslStatus {
    /// Not ordered yet.
    Initializing,
    /// Ordered; the challenge is being validated.
    PendingValidation,
    /// Validated; the certificate is being issued.
    PendingIssuance,
    /// Its ACME certificate is served.
    Active,
    /// Active, and being renewed.
    PendingRenewal,
}

/// An `acme` hostname's order state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeOrder {
    /// The challenge.
    pub method: AcmeMethod,
    /// Where the certificate stands.
    pub status: SslStatus,
    /// Why the last order failed (cleared by a success).
    pub validation_errors: Vec<String>,
    /// The issuer of the served ACME certificate.
    pub certificate_authority: Option<String>,
    /// When to renew (Unix seconds).
    pub renew_on: Option<i64>,
    /// Not before (Unix seconds): the backoff after a failure.
    pub retry_on: Option<i64>,
    /// Failed orders in a row.
    pub failures: u32,
}

impl AcmeOrder {
    /// A hostname just switched to `acme`.
    pub fn new(method: AcmeMethod) -> AcmeOrder {
        AcmeOrder {
            method,
            status: SslStatus::Initializing,
            validation_errors: Vec::new(),
            certificate_authority: None,
            renew_on: None,
            retry_on: None,
            failures: 0,
        }
    }

    /// Whether an order is due at `now`.
    pub fn due(&self, now: i64) -> bool {
        if self.retry_on.is_some_and(|t| t > now) {
            return false;
        }
        match self.status {
            SslStatus::Active | SslStatus::PendingRenewal => {
                self.renew_on.is_some_and(|t| t <= now)
            }
            _ => true,
        }
    }
}
