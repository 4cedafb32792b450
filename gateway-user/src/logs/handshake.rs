//! The handshake log: one JSON line per TLS handshake that fails after the
//! kernel layer, or that completes with what the gateway does not accept (no
//! or an unknown SNI, a client certificate missing or refused on an mTLS
//! hostname: the handshake goes on, the requests are refused or flagged).
//!
//! Reasons come from what BoringSSL reports: its error reasons (versions,
//! ciphers, what is not TLS, an alert the client sent), the verification
//! result of the client's certificate, and the hostname policy chosen for the
//! SNI. Field names follow Cloudflare's Spectrum events where one fits.

use std::{net::SocketAddr, time::SystemTime};

use boring::ssl::{NameType, SslRef};
use boring_sys as ffi;

use super::{Log, line::Line};
use crate::{rules::fields::ClientAuth, tls::HostTls};

/// The handshake log's fields, in order.
pub const FIELDS: &[&str] = &[
    "Timestamp",
    "ClientIP",
    "ClientPort",
    "ClientTlsClientHelloServerName",
    "ClientTlsOfferedProtocol",
    "ClientTlsProtocol",
    "ClientTlsCipher",
    "ClientTlsStatus",
    "HandshakeCompleted",
    "ClientTlsAlert",
    "ClientTlsError",
    "Hostname",
    "ClientMTLSAuthCertFingerprint",
    "ClientMTLSAuthCertSerial",
    "Layer",
    "XdpAction",
    "SplitHello",
    "Summary",
    "Refusals",
    "RefusalsNotSent",
    "Top",
];

/// Why a handshake is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The highest version offered is below the hostname's minimum.
    VersionBelowMinimum,
    /// No cipher offered is in the hostname's list.
    CipherBelowPolicy,
    /// No SNI, and no default certificate (or the requests will be refused).
    NoSni,
    /// An SNI no hostname answers to.
    UnknownSni,
    /// mTLS hostname, no client certificate.
    ClientCertMissing,
    /// A client certificate from a CA the hostname does not trust.
    ClientCertUnknownCa,
    /// An expired client certificate.
    ClientCertExpired,
    /// A client certificate not yet valid.
    ClientCertNotYetValid,
    /// A revoked client certificate.
    ClientCertRevoked,
    /// A client certificate not meant for client authentication (EKU).
    ClientCertWrongEku,
    /// A client certificate refused for another reason.
    ClientCertInvalid,
    /// The ClientHello never arrived whole in time.
    HelloIncomplete,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// The client sent an alert.
    AlertReceived,
    /// What the client sent is not TLS (plain HTTP, say).
    NotTls,
    /// The client closed the connection during the handshake.
    ConnectionClosed,
    /// Anything else BoringSSL refused.
    Other,
}

impl Reason {
    /// The `ClientTlsStatus` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::VersionBelowMinimum => "version_below_minimum",
            Reason::CipherBelowPolicy => "cipher_below_policy",
            Reason::NoSni => "no_sni",
            Reason::UnknownSni => "unknown_sni",
            Reason::ClientCertMissing => "client_cert_missing",
            Reason::ClientCertUnknownCa => "client_cert_unknown_ca",
            Reason::ClientCertExpired => "client_cert_expired",
            Reason::ClientCertNotYetValid => "client_cert_not_yet_valid",
            Reason::ClientCertRevoked => "client_cert_revoked",
            Reason::ClientCertWrongEku => "client_cert_wrong_eku",
            Reason::ClientCertInvalid => "client_cert_invalid",
            Reason::HelloIncomplete => "hello_incomplete",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::AlertReceived => "alert_received",
            Reason::NotTls => "not_tls",
            Reason::ConnectionClosed => "connection_closed",
            Reason::Other => "other",
        }
    }

    /// The access log's `ClientMTLSAuthStatus` of a certificate reason.
    pub fn mtls_status(self) -> &'static str {
        match self {
            Reason::ClientCertMissing => "absent",
            Reason::ClientCertUnknownCa | Reason::ClientCertWrongEku => "untrusted",
            Reason::ClientCertExpired => "expired",
            Reason::ClientCertNotYetValid => "notyetvalid",
            Reason::ClientCertRevoked => "revoked",
            _ => "invalid",
        }
    }
}

/// What is wrong with a client certificate outcome, if anything: from the
/// verification result BoringSSL reported (its text, kept with the outcome).
pub fn cert_problem(auth: &ClientAuth) -> Option<Reason> {
    if !auth.presented {
        return Some(Reason::ClientCertMissing);
    }
    if auth.verified {
        return auth.revoked.then_some(Reason::ClientCertRevoked);
    }
    let why = auth.failure.as_deref().unwrap_or_default();
    let has = |s: &str| why.contains(s);
    Some(if has("has expired") {
        Reason::ClientCertExpired
    } else if has("not yet valid") {
        Reason::ClientCertNotYetValid
    } else if has("purpose") {
        Reason::ClientCertWrongEku
    } else if has("issuer") || has("self signed") || has("self-signed") || has("trusted") {
        Reason::ClientCertUnknownCa
    } else {
        Reason::ClientCertInvalid
    })
}

/// The access log's `ClientMTLSAuthStatus` of an outcome on an mTLS hostname.
pub fn mtls_status(auth: &ClientAuth) -> &'static str {
    cert_problem(auth).map_or("ok", Reason::mtls_status)
}

/// One handshake event.
pub struct Event<'a> {
    /// The client.
    pub peer: SocketAddr,
    /// The handshake, when it got far enough to have one.
    pub ssl: Option<&'a SslRef>,
    /// The hostname policy chosen, when the hello was read.
    pub host: Option<&'a HostTls>,
    /// Why it is logged.
    pub reason: Reason,
    /// Whether the handshake completed anyway.
    pub completed: bool,
    /// The alert the client sent, if that is what ended it.
    pub alert: Option<&'static str>,
    /// BoringSSL's words.
    pub error: &'a str,
    /// The client certificate's outcome, for certificate reasons.
    pub auth: Option<&'a ClientAuth>,
}

impl Event<'_> {
    /// Writes the event to `log` (if sampled).
    pub fn write(&self, log: &Log) {
        if !log.sampled() {
            return;
        }
        let ssl = self.ssl;
        let mut l = Line::new(FIELDS, log.fields());
        l.field("Timestamp", &crate::clock::rfc3339_ms(SystemTime::now()));
        l.field("ClientIP", &self.peer.ip());
        l.field("ClientPort", &self.peer.port());
        let sni = ssl.and_then(|s| s.servername(NameType::HOST_NAME));
        l.field("ClientTlsClientHelloServerName", &sni.unwrap_or_default());
        let offered = ssl.and_then(crate::tls::offered::get);
        l.field("ClientTlsOfferedProtocol", offered.map_or("", version_name));
        let negotiated = ssl.filter(|_| self.completed);
        l.field(
            "ClientTlsProtocol",
            negotiated.map_or("", |s| s.version_str()),
        );
        let cipher = negotiated
            .and_then(|s| s.current_cipher())
            .map(|c| c.name());
        l.field("ClientTlsCipher", cipher.unwrap_or_default());
        l.field("ClientTlsStatus", self.reason.as_str());
        l.field("HandshakeCompleted", &self.completed);
        l.field("ClientTlsAlert", self.alert.unwrap_or_default());
        l.field("ClientTlsError", &*super::line::cut(self.error));
        l.field("Hostname", self.host.map_or("", |h| &*h.name));
        let cert = self.auth.and_then(|a| a.cert.as_ref());
        l.field(
            "ClientMTLSAuthCertFingerprint",
            cert.map_or("", |c| c.fingerprint_sha256.as_str()),
        );
        l.field(
            "ClientMTLSAuthCertSerial",
            cert.map_or("", |c| c.serial.as_str()),
        );
        l.field("Layer", "tls");
        log.send(l.finish());
    }
}

/// A TLS version's name, as BoringSSL names negotiated ones.
pub fn version_name(wire: u16) -> &'static str {
    match wire {
        gateway_common::version::SSL2 => "SSLv2",
        0x0300 => "SSLv3",
        0x0301 => "TLSv1",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        _ => "unknown",
    }
}

/// Why a handshake failed, from BoringSSL's error: the reason, the alert the
/// client sent if any, and the error's text.
pub fn classify_failure(
    error: &(dyn std::error::Error + 'static),
    host: Option<&HostTls>,
    sni: bool,
) -> (Reason, Option<&'static str>) {
    let ssl_error = error
        .source()
        .and_then(|s| s.downcast_ref::<boring::ssl::Error>())
        .or_else(|| error.downcast_ref::<boring::ssl::Error>());
    let Some(ssl_error) = ssl_error else {
        return (Reason::Other, None);
    };
    if ssl_error.io_error().is_some() {
        return (Reason::ConnectionClosed, None);
    }
    let Some(stack) = ssl_error.ssl_error() else {
        // No error, no I/O error: the peer closed the connection.
        return (Reason::ConnectionClosed, None);
    };
    for e in stack.errors() {
        if e.library_code() as i64 != i64::from(ffi::ERR_LIB_SSL.0) {
            continue;
        }
        let code = e.reason_code();
        let offset = ffi::SSL_AD_REASON_OFFSET;
        if code >= offset {
            return (Reason::AlertReceived, Some(alert_name(code - offset)));
        }
        let reason = match code {
            ffi::SSL_R_UNSUPPORTED_PROTOCOL => Reason::VersionBelowMinimum,
            ffi::SSL_R_NO_SHARED_CIPHER => Reason::CipherBelowPolicy,
            ffi::SSL_R_HTTP_REQUEST
            | ffi::SSL_R_HTTPS_PROXY_REQUEST
            | ffi::SSL_R_WRONG_VERSION_NUMBER
            | ffi::SSL_R_UNKNOWN_PROTOCOL => Reason::NotTls,
            ffi::SSL_R_NO_CERTIFICATE_SET | ffi::SSL_R_CERT_CB_ERROR
                if host.is_none_or(|h| h.name.is_empty()) =>
            {
                if sni {
                    Reason::UnknownSni
                } else {
                    Reason::NoSni
                }
            }
            _ => continue,
        };
        return (reason, None);
    }
    (Reason::Other, None)
}

/// A TLS alert's name (RFC 8446 §6).
pub fn alert_name(alert: i32) -> &'static str {
    match alert {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(why: &str) -> ClientAuth {
        ClientAuth {
            presented: true,
            failure: Some(why.into()),
            ..ClientAuth::default()
        }
    }

    #[test]
    fn certificate_problems_come_from_the_verification_result() {
        assert_eq!(
            cert_problem(&ClientAuth::default()),
            Some(Reason::ClientCertMissing)
        );
        for (why, reason) in [
            ("certificate has expired", Reason::ClientCertExpired),
            (
                "certificate is not yet valid",
                Reason::ClientCertNotYetValid,
            ),
            (
                "unsupported certificate purpose",
                Reason::ClientCertWrongEku,
            ),
            (
                "unable to get local issuer certificate",
                Reason::ClientCertUnknownCa,
            ),
            (
                "its CA is no longer trusted for this hostname",
                Reason::ClientCertUnknownCa,
            ),
            ("certificate signature failure", Reason::ClientCertInvalid),
        ] {
            assert_eq!(cert_problem(&failed(why)), Some(reason), "{why}");
        }
        let ok = ClientAuth {
            presented: true,
            verified: true,
            ..ClientAuth::default()
        };
        assert_eq!(cert_problem(&ok), None);
        assert_eq!(mtls_status(&ok), "ok");
        let revoked = ClientAuth {
            revoked: true,
            ..ok
        };
        assert_eq!(mtls_status(&revoked), "revoked");
    }
}
