//! Building ClientHello messages and records byte by byte.

use gateway_common::version;

/// Extension type numbers used here.
pub(super) mod ext_type {
    /// server_name (RFC 6066)
    pub(crate) const SERVER_NAME: u16 = 0;
    /// supported_groups
    pub(crate) const SUPPORTED_GROUPS: u16 = 10;
    /// signature_algorithms
    pub(crate) const SIGNATURE_ALGORITHMS: u16 = 13;
    /// ALPN
    pub(crate) const ALPN: u16 = 16;
    /// padding (RFC 7685)
    pub(crate) const PADDING: u16 = 21;
    /// supported_versions (RFC 8446)
    pub(crate) const SUPPORTED_VERSIONS: u16 = 43;
    /// key_share (RFC 8446)
    pub(crate) const KEY_SHARE: u16 = 51;
}

/// One extension of a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext {
    /// `server_name` with one host_name entry (bytes as given, not lowercased).
    ServerName(Vec<u8>),
    /// `supported_versions` with these versions.
    SupportedVersions(Vec<u16>),
    /// Any other extension: type and body.
    Raw(u16, Vec<u8>),
}

impl Ext {
    /// `server_name` for a host name.
    pub fn sni(name: &str) -> Ext {
        Ext::ServerName(name.as_bytes().to_vec())
    }

    /// A `key_share` extension whose body is `len` bytes (X25519MLKEM768 is about 1,220).
    pub fn key_share(len: usize) -> Ext {
        Ext::Raw(ext_type::KEY_SHARE, vec![0x42; len])
    }

    /// A `padding` extension of `len` zero bytes.
    pub fn padding(len: usize) -> Ext {
        Ext::Raw(ext_type::PADDING, vec![0; len])
    }

    /// An empty GREASE extension.
    pub fn grease() -> Ext {
        Ext::Raw(0x1a1a, Vec::new())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (kind, body) = match self {
            Ext::ServerName(name) => {
                let mut body = Vec::with_capacity(name.len() + 5);
                body.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
                body.push(0);
                body.extend_from_slice(&(name.len() as u16).to_be_bytes());
                body.extend_from_slice(name);
                (ext_type::SERVER_NAME, body)
            }
            Ext::SupportedVersions(versions) => {
                let mut body = vec![(versions.len() * 2) as u8];
                for v in versions {
                    body.extend_from_slice(&v.to_be_bytes());
                }
                (ext_type::SUPPORTED_VERSIONS, body)
            }
            Ext::Raw(kind, body) => (*kind, body.clone()),
        };
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
    }
}

/// A ClientHello, field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` (the version field of the hello itself).
    pub legacy_version: u16,
    /// Version written in the record header (meaningless to the policy).
    pub record_version: u16,
    /// Legacy session id (0..=32 bytes).
    pub session_id: Vec<u8>,
    /// Cipher suites.
    pub ciphers: Vec<u16>,
    /// Compression methods.
    pub compression: Vec<u8>,
    /// Extensions in order; `None` omits the extensions block entirely.
    pub extensions: Option<Vec<Ext>>,
}

impl ClientHello {
    /// A hello like today's browsers send: GREASE, SNI, TLS 1.3 and 1.2, a key share.
    pub fn modern(sni: &str) -> ClientHello {
        ClientHello {
            legacy_version: version::TLS1_2,
            record_version: version::TLS1_0,
            session_id: vec![0x11; 32],
            ciphers: vec![
                0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030,
            ],
            compression: vec![0],
            extensions: Some(vec![
                Ext::grease(),
                Ext::sni(sni),
                Ext::Raw(ext_type::SUPPORTED_GROUPS, vec![0, 4, 0x2a, 0x2a, 0, 0x1d]),
                Ext::Raw(ext_type::SIGNATURE_ALGORITHMS, vec![0, 4, 4, 3, 8, 4]),
                Ext::Raw(ext_type::ALPN, b"\x00\x0c\x02h2\x08http/1.1".to_vec()),
                Ext::SupportedVersions(vec![0x3a3a, version::TLS1_3, version::TLS1_2]),
                Ext::key_share(38),
            ]),
        }
    }

    /// A hello from a client that predates `supported_versions`: offers `legacy_version` only.
    pub fn legacy(legacy_version: u16, sni: Option<&str>) -> ClientHello {
        let mut extensions = vec![Ext::Raw(ext_type::SUPPORTED_GROUPS, vec![0, 2, 0, 0x17])];
        if let Some(name) = sni {
            extensions.insert(0, Ext::sni(name));
        }
        ClientHello {
            legacy_version,
            record_version: version::TLS1_0,
            session_id: Vec::new(),
            ciphers: vec![0xc013, 0xc014, 0x002f, 0x0035],
            compression: vec![0],
            extensions: Some(extensions),
        }
    }

    /// The handshake message: type, 24-bit length, body.
    pub fn message(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(512);
        body.extend_from_slice(&self.legacy_version.to_be_bytes());
        body.extend_from_slice(&[0x5a; 32]);
        body.push(self.session_id.len() as u8);
        body.extend_from_slice(&self.session_id);
        body.extend_from_slice(&((self.ciphers.len() * 2) as u16).to_be_bytes());
        for c in &self.ciphers {
            body.extend_from_slice(&c.to_be_bytes());
        }
        body.push(self.compression.len() as u8);
        body.extend_from_slice(&self.compression);
        if let Some(exts) = &self.extensions {
            let mut block = Vec::new();
            for e in exts {
                e.encode(&mut block);
            }
            body.extend_from_slice(&(block.len() as u16).to_be_bytes());
            body.extend_from_slice(&block);
        }
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// The hello in a single TLS record.
    pub fn record(&self) -> Vec<u8> {
        records(&self.message(), self.record_version, usize::MAX)
    }
}

/// Wraps a handshake message in TLS handshake records of at most `max_fragment` bytes each.
pub fn records(message: &[u8], record_version: u16, max_fragment: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for chunk in message.chunks(max_fragment.clamp(1, 16384)) {
        out.push(22);
        out.extend_from_slice(&record_version.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// An SSL 2.0-format ClientHello offering `version` (0x0002 for SSL 2, 0x0301 for
/// an SSLv2-compatible TLS 1.0 hello).
pub fn sslv2_hello(version: u16) -> Vec<u8> {
    let cipher_specs: [u8; 9] = [0x01, 0x00, 0x80, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x35];
    let challenge = [0x33u8; 16];
    let len = 9 + cipher_specs.len() + challenge.len();
    let mut out = vec![0x80 | (len >> 8) as u8, len as u8, 1];
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&(cipher_specs.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(challenge.len() as u16).to_be_bytes());
    out.extend_from_slice(&cipher_specs);
    out.extend_from_slice(&challenge);
    out
}
