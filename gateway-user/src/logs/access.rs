//! The access log: one JSON line per HTTP request, with Cloudflare's Logpush
//! field names (`http_requests`) where one fits; the README lists each field.
//! [`Entry`] is what the terminator gathered, borrowed; [`Entry::line`]
//! writes it.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use super::{
    handshake::mtls_status,
    line::{FieldMask, Line, cut, text},
    ray,
};
use crate::{clock::rfc3339_ms as rfc3339, rules::fields::ClientAuth};

/// The access log's fields, in order.
pub const FIELDS: &[&str] = &[
    "EdgeStartTimestamp",
    "EdgeEndTimestamp",
    "RayID",
    "ClientIP",
    "ClientSrcPort",
    "ClientRequestHost",
    "ClientRequestMethod",
    "ClientRequestURI",
    "ClientRequestProtocol",
    "ClientRequestUserAgent",
    "ClientSSLProtocol",
    "ClientSSLCipher",
    "ClientTlsClientHelloServerName",
    "ClientMTLSAuthStatus",
    "ClientMTLSAuthCertFingerprint",
    "ClientMTLSAuthCertSerial",
    "ClientMTLSAuthCertSubject",
    "ClientMTLSAuthCertIssuerSKI",
    "SecurityAction",
    "SecurityRuleID",
    "SecurityRuleDescription",
    "EdgeResponseStatus",
    "EdgeResponseBytes",
    "EdgeTimeToFirstByteMs",
    "OriginResponseStatus",
    "OriginResponseDurationMs",
    "GatewayStage",
    "GatewayResponseComplete",
];

/// One request, as the access log writes it.
pub struct Entry<'a> {
    /// When the request arrived.
    pub start: SystemTime,
    /// When its response ended (or the connection was cut).
    pub end: SystemTime,
    /// Its ray id.
    pub ray: u64,
    /// The client.
    pub client: SocketAddr,
    /// The host it named (Host or :authority), raw.
    pub host: &'a [u8],
    /// Its method.
    pub method: &'a str,
    /// Its target (path and query).
    pub uri: &'a str,
    /// `HTTP/1.1`, `HTTP/2`…
    pub protocol: &'static str,
    /// Its User-Agent, raw.
    pub user_agent: &'a [u8],
    /// The TLS version negotiated.
    pub tls_version: &'a str,
    /// The cipher negotiated.
    pub tls_cipher: &'a str,
    /// The SNI.
    pub sni: &'a str,
    /// The client certificate's outcome, on an mTLS hostname.
    pub mtls: Option<&'a ClientAuth>,
    /// The rule that decided (or the last log rule that matched): its
    /// action, id and description.
    pub rule: Option<(&'static str, &'a str, &'a str)>,
    /// The status the client got.
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// Until the response's head was ready.
    pub ttfb: Duration,
    /// The origin's status and how long it took to answer, when it did.
    pub origin: Option<(u16, Duration)>,
    /// The phase that made the response.
    pub stage: &'static str,
    /// Whether the response's body was sent to its end.
    pub complete: bool,
}

impl Entry<'_> {
    /// The line, with the fields of `mask`.
    pub fn line(&self, mask: FieldMask) -> Vec<u8> {
        let mut l = Line::new(FIELDS, mask);
        l.field("EdgeStartTimestamp", &rfc3339(self.start));
        l.field("EdgeEndTimestamp", &rfc3339(self.end));
        l.field(
            "RayID",
            std::str::from_utf8(&ray::hex(self.ray)).unwrap_or(""),
        );
        l.field("ClientIP", &self.client.ip());
        l.field("ClientSrcPort", &self.client.port());
        l.field("ClientRequestHost", &text(self.host));
        l.field("ClientRequestMethod", &cut(self.method));
        l.field("ClientRequestURI", &cut(self.uri));
        l.field("ClientRequestProtocol", self.protocol);
        l.field("ClientRequestUserAgent", &text(self.user_agent));
        l.field("ClientSSLProtocol", self.tls_version);
        l.field("ClientSSLCipher", self.tls_cipher);
        l.field("ClientTlsClientHelloServerName", &cut(self.sni));
        self.mtls_fields(&mut l);
        let (action, id, description) = self.rule.unwrap_or_default();
        l.field("SecurityAction", action);
        l.field("SecurityRuleID", &cut(id));
        l.field("SecurityRuleDescription", &cut(description));
        l.field("EdgeResponseStatus", &self.status);
        l.field("EdgeResponseBytes", &self.bytes);
        l.field("EdgeTimeToFirstByteMs", &millis(self.ttfb));
        let (origin_status, origin_took) = self.origin.unwrap_or_default();
        l.field("OriginResponseStatus", &origin_status);
        l.field("OriginResponseDurationMs", &millis(origin_took));
        l.field("GatewayStage", self.stage);
        l.field("GatewayResponseComplete", &self.complete);
        l.finish()
    }

    fn mtls_fields(&self, l: &mut Line) {
        let status = self.mtls.map_or("", mtls_status);
        l.field("ClientMTLSAuthStatus", status);
        let cert = self.mtls.and_then(|a| a.cert.as_ref());
        let value = |f: fn(&crate::rules::fields::CertDetails) -> &str| cert.map_or("", f);
        l.field(
            "ClientMTLSAuthCertFingerprint",
            value(|c| &c.fingerprint_sha256),
        );
        l.field("ClientMTLSAuthCertSerial", value(|c| &c.serial));
        l.field(
            "ClientMTLSAuthCertSubject",
            &cut(value(|c| &c.subject_dn_rfc2253)),
        );
        l.field("ClientMTLSAuthCertIssuerSKI", value(|c| &c.issuer_ski));
    }
}

/// Whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_line_of_json_with_every_field() {
        let ua = b"curl\r\n\"x\xff".to_vec();
        let entry = Entry {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            end: SystemTime::UNIX_EPOCH + Duration::from_millis(2_000),
            ray: 0xab,
            client: "[::1]:5000".parse().unwrap(),
            host: b"api.test",
            method: "GET",
            uri: "/a?b=c",
            protocol: "HTTP/1.1",
            user_agent: &ua,
            tls_version: "TLSv1.3",
            tls_cipher: "TLS_AES_128_GCM_SHA256",
            sni: "api.test",
            mtls: Some(&ClientAuth::default()),
            rule: Some(("block", "r1", "no")),
            status: 403,
            bytes: 10,
            ttfb: Duration::from_millis(3),
            origin: None,
            stage: "firewall",
            complete: true,
        };
        let line = entry.line(FieldMask::select(FIELDS, &[]).unwrap());
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let object = v.as_object().unwrap();
        assert_eq!(object.len(), FIELDS.len());
        assert_eq!(v["EdgeStartTimestamp"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["RayID"], "00000000000000ab");
        assert_eq!(v["ClientIP"], "::1");
        assert_eq!(v["ClientRequestUserAgent"], "curl\r\n\"x\u{fffd}");
        assert_eq!(v["ClientMTLSAuthStatus"], "absent");
        assert_eq!(v["SecurityAction"], "block");
        assert_eq!(v["OriginResponseStatus"], 0);
    }
}
