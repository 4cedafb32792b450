//! The highest TLS version a client offered, noted from its ClientHello in the
//! select-certificate callback, for the handshake log of a handshake that then
//! fails (BoringSSL keeps no trace of the offer).

use std::sync::LazyLock;

use boring::ssl::{ClientHello, ExtensionType, Ssl, SslRef};

/// Per-connection data: the highest version offered (wire value).
static OFFERED_INDEX: LazyLock<boring::ex_data::Index<Ssl, u16>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an SSL ex_data index"));

/// The highest version `hello` offers: from `supported_versions` (GREASE
/// values skipped) when present, else its legacy version.
pub fn highest(hello: &ClientHello<'_>) -> u16 {
    if let Some(ext) = hello.get_extension(ExtensionType::SUPPORTED_VERSIONS)
        && let Some((_, list)) = ext.split_first()
    {
        let best = list
            .chunks_exact(2)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .filter(|v| v & 0x0f0f != 0x0a0a)
            .max();
        if let Some(best) = best {
            return best;
        }
    }
    match hello.as_bytes() {
        [major, minor, ..] => u16::from_be_bytes([*major, *minor]),
        _ => 0,
    }
}

/// Notes the highest version `hello` offers on its connection.
pub fn record(hello: &mut ClientHello<'_>) {
    let version = highest(hello);
    hello.ssl_mut().set_ex_data(*OFFERED_INDEX, version);
}

/// The highest version the connection's client offered, once noted.
pub fn get(ssl: &SslRef) -> Option<u16> {
    ssl.ex_data(*OFFERED_INDEX).copied()
}
