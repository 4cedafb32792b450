//! WebSockets over HTTP/1.1 (RFC 6455): an `Upgrade: websocket` request goes
//! to the origin with its upgrade headers, and when the origin answers 101
//! the client's and the origin's upgraded streams are spliced until either
//! side closes. The request runs every phase first (rules, SNI↔Host, client
//! certificate headers); only the tunnel's bytes skip them.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, Version, header, request::Parts};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use log::debug;

use super::{ConnInfo, metrics::TerminatorMetrics};

/// The upgrade protocol the gateway passes on (others are hop-by-hop and removed).
const WEBSOCKET: &str = "websocket";

/// A client's WebSocket upgrade, taken from its request before the
/// hop-by-hop headers are removed.
pub struct ClientUpgrade {
    /// The client side of the connection, once hyper hands it over.
    on_upgrade: OnUpgrade,
    /// The request's `Upgrade` value, put back on the origin's request.
    protocol: HeaderValue,
}

/// Whether `headers`' `Connection` lists the `upgrade` token.
fn connection_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The `Upgrade` value of an HTTP/1.1 request that asks for a WebSocket
/// (`Connection: upgrade`, `Upgrade: websocket`).
fn websocket_asked(parts: &Parts) -> Option<&HeaderValue> {
    if parts.version != Version::HTTP_11 || !connection_upgrade(&parts.headers) {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?;
    protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case(WEBSOCKET))
        .then_some(protocol)
}

/// Takes the WebSocket upgrade out of an HTTP/1.1 request that asks for one
/// (`Connection: upgrade`, `Upgrade: websocket`); `None` for any other request.
pub fn take(parts: &mut Parts) -> Option<ClientUpgrade> {
    let protocol = websocket_asked(parts)?.clone();
    let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
    Some(ClientUpgrade {
        on_upgrade,
        protocol,
    })
}

impl ClientUpgrade {
    /// Puts the upgrade headers back on the origin's request (after the
    /// hop-by-hop headers were removed).
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// The origin's answer to the upgrade request: a 101 starts the tunnel
    /// (spawned; it waits until hyper has sent the 101 to the client) and
    /// keeps its `Connection`/`Upgrade` headers for the client; any other
    /// answer is returned as it came, the tunnel never opened. The `bool`:
    /// whether the tunnel opens. The tunnel holds `conn` (its place under
    /// `max_connections`) until it ends.
    pub fn splice(
        self,
        conn: &Arc<ConnInfo>,
        metrics: &Arc<TerminatorMetrics>,
        mut response: Response<Incoming>,
    ) -> (Response<Incoming>, bool) {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return (response, false);
        }
        let origin = hyper::upgrade::on(&mut response);
        let client = self.on_upgrade;
        let (conn, metrics) = (conn.clone(), metrics.clone());
        metrics.websocket_upgrades.inc();
        tokio::spawn(async move {
            let _conn = conn;
            let (client, origin) = match tokio::try_join!(client, origin) {
                Ok(both) => both,
                Err(e) => return debug!("websocket upgrade: {e}"),
            };
            metrics.open_tunnels.inc();
            let (mut client, mut origin) = (TokioIo::new(client), TokioIo::new(origin));
            // Each direction ends at its side's EOF (passed on as a shutdown);
            // an error on either side (a reset) ends both.
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut origin).await {
                debug!("websocket tunnel: {e}");
            }
            metrics.open_tunnels.dec();
        });
        (response, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, connection: &str, upgrade: &str) -> Parts {
        let req = http::Request::builder()
            .version(version)
            .header(header::CONNECTION, connection)
            .header(header::UPGRADE, upgrade)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn only_http11_websocket_upgrades_are_taken() {
        let asked = |v, c, u| websocket_asked(&parts(v, c, u)).is_some();
        assert!(asked(Version::HTTP_11, "keep-alive, Upgrade", "WebSocket"));
        assert!(!asked(Version::HTTP_11, "keep-alive", "websocket"));
        assert!(!asked(Version::HTTP_11, "upgrade", "h2c"));
        assert!(!asked(Version::HTTP_2, "upgrade", "websocket"));
    }
}
