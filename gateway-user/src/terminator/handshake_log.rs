//! The terminator's side of the handshake log (see [`crate::logs::handshake`]):
//! an event for each handshake that fails after the kernel layer, and for each
//! that completes with no or an unknown SNI, or with a client certificate an
//! mTLS hostname does not accept. Nothing is done when the log is off.

use std::net::SocketAddr;

use boring::ssl::SslRef;

use super::Terminator;
use crate::{
    logs::handshake::{Event, Reason, cert_problem, classify_failure},
    rules::fields::ClientAuth,
    tls::{HostTls, acceptor},
};

impl Terminator {
    /// The hello never arrived whole, or the handshake never finished, in
    /// time: counted and logged.
    pub(super) fn handshake_timed_out(&self, peer: SocketAddr, hello_complete: bool) {
        self.metrics.handshake_failed(true);
        let Some(log) = &self.logs.handshake else {
            return;
        };
        let reason = match hello_complete {
            false => Reason::HelloIncomplete,
            true => Reason::HandshakeTimeout,
        };
        Event {
            peer,
            ssl: None,
            host: None,
            reason,
            completed: false,
            alert: None,
            error: "",
            auth: None,
        }
        .write(log);
    }

    /// BoringSSL refused the handshake (`error` says why): counted and logged.
    pub(super) fn handshake_refused<S>(
        &self,
        peer: SocketAddr,
        error: &tokio_boring::HandshakeError<S>,
    ) where
        S: std::fmt::Debug + 'static,
    {
        self.metrics.handshake_failed(false);
        let Some(log) = &self.logs.handshake else {
            return;
        };
        let ssl = error.ssl();
        let host = ssl.and_then(acceptor::connection_host);
        let sni = ssl
            .and_then(|s| s.servername(boring::ssl::NameType::HOST_NAME))
            .is_some();
        let (reason, alert) = classify_failure(error, host.as_deref(), sni);
        let text = error.to_string();
        Event {
            peer,
            ssl,
            host: host.as_deref(),
            reason,
            completed: false,
            alert,
            error: &text,
            auth: None,
        }
        .write(log);
    }

    /// A completed handshake: logged when its hostname is unknown (no or an
    /// unknown SNI: its requests are refused) or its client certificate is
    /// not accepted on an mTLS hostname.
    pub(super) fn log_handshake_completed(
        &self,
        peer: SocketAddr,
        ssl: &SslRef,
        host: &HostTls,
        auth: &ClientAuth,
    ) {
        let Some(log) = &self.logs.handshake else {
            return;
        };
        let sni = ssl.servername(boring::ssl::NameType::HOST_NAME);
        let reason = if host.name.is_empty() {
            Some(if sni.is_some() {
                Reason::UnknownSni
            } else {
                Reason::NoSni
            })
        } else if host.mtls.is_some() {
            cert_problem(auth)
        } else {
            None
        };
        let Some(reason) = reason else { return };
        Event {
            peer,
            ssl: Some(ssl),
            host: Some(host),
            reason,
            completed: true,
            alert: None,
            error: auth.failure.as_deref().unwrap_or_default(),
            auth: Some(auth),
        }
        .write(log);
    }
}
