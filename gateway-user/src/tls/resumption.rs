//! Session resumption, on every hostname (mTLS ones included), bound to the
//! policy the session's client satisfied.
//!
//! - **What resumes:** TLS 1.3 PSK tickets, TLS 1.2 tickets, and TLS 1.2
//!   session IDs (an in-memory cache of [`SESSION_CACHE_SIZE`] sessions, for
//!   clients without tickets). Tickets are sealed with [`super::tickets`]'s
//!   rotating keys; a session lives as long as its ticket key is accepted
//!   (two rotation periods), and TLS 1.3 renewals end at BoringSSL's 7-day
//!   bound on a session's authentication.
//! - **Binding:** the select-certificate callback sets a session id context
//!   on each connection before BoringSSL looks at the offered session: a
//!   SHA-256 of the hostname entry, the SNI, the minimum version, the cipher
//!   list, mTLS on or off and the fingerprint of the CA set (see
//!   [`super::snapshot::TlsSnapshot::session_context`]). BoringSSL resumes a
//!   session only when its stored context is that one; otherwise it makes a
//!   full handshake (never an error). So a session made on another hostname,
//!   without mTLS, under other CAs (one removed, one replaced) or under a
//!   lower minimum or other ciphers gets a full handshake, which asks this
//!   hostname's client certificate.
//! - **The client certificate:** BoringSSL keeps the client's chain in the
//!   session. A resumed connection on an mTLS hostname has it verified again,
//!   at once, against the hostname's CAs and revocations of the current
//!   configuration ([`super::acceptor::connection_policy`]), and each request
//!   checks revocation and the rules again, as on any connection.
//! - **No 0-RTT:** early data stays disabled; tickets do not allow it, and a
//!   client that sends it anyway has it skipped.
//! - **Off** (`session_resumption = false`): no ticket, and a per-connection
//!   random context, so no session is resumed or made resumable.

use std::sync::{
    Arc, LazyLock,
    atomic::{AtomicBool, Ordering},
};

use boring::{
    error::ErrorStack,
    ssl::{ClientHello, ExtensionType, Ssl, SslAcceptorBuilder, SslRef, SslSessionCacheMode},
};
use foreign_types::ForeignTypeRef;

use super::tickets::{ACCEPTED_PERIODS, TicketKeys};

/// TLS 1.2 sessions kept for session-ID resumption at most.
pub const SESSION_CACHE_SIZE: u64 = 10_000;

/// What the client offered to resume with, and what became of it.
#[derive(Default)]
pub struct Offer {
    /// A ticket, a PSK or a TLS 1.2 session ID was offered.
    offered: bool,
    /// The hostname has resumption off.
    disabled: bool,
    /// The ticket's key is not one of ours (rotated out, another process's).
    unknown_key: AtomicBool,
}

/// Per-connection data: the resumption offer.
static OFFER_INDEX: LazyLock<boring::ex_data::Index<Ssl, Offer>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an SSL ex_data index"));

/// How a handshake went, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A full handshake.
    Full,
    /// A resumed session.
    Resumed,
}

impl Kind {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Resumed => "resumed",
        }
    }
}

/// Why a session the client offered was not resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Resumption is off for the hostname.
    Disabled,
    /// The ticket was sealed with a key that is no longer (or never was) accepted.
    UnknownKey,
    /// The session was made under another hostname or policy, or has expired,
    /// or (a session ID) is no longer cached.
    NotResumable,
}

impl Refused {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Disabled => "disabled",
            Refused::UnknownKey => "unknown_ticket_key",
            Refused::NotResumable => "not_resumable",
        }
    }
}

/// Turns resumption on for the acceptor: tickets sealed with `keys`, the
/// TLS 1.2 session cache, session lifetimes within the keys' acceptance, and
/// early data explicitly off.
pub fn configure(b: &mut SslAcceptorBuilder, keys: Arc<TicketKeys>, rotation_secs: u64) {
    b.set_session_cache_mode(SslSessionCacheMode::SERVER);
    let lifetime = rotation_secs
        .max(1)
        .saturating_mul(ACCEPTED_PERIODS as u64 - 1);
    let lifetime = u32::try_from(lifetime).unwrap_or(u32::MAX);
    // SAFETY: a live SSL_CTX owned by the builder; plain setters.
    unsafe {
        boring_sys::SSL_CTX_sess_set_cache_size(b.as_ptr(), SESSION_CACHE_SIZE as _);
        boring_sys::SSL_CTX_set_timeout(b.as_ptr(), lifetime);
        boring_sys::SSL_CTX_set_session_psk_dhe_timeout(b.as_ptr(), lifetime);
        boring_sys::SSL_CTX_set_early_data_enabled(b.as_ptr(), 0);
    }
    let callback = keys.callback(unknown_key);
    // SAFETY: the callback sets the ticket's name, IV, cipher and HMAC as
    // BoringSSL documents (see `TicketKeys::seal` and `TicketKeys::open`).
    unsafe { b.set_ticket_key_callback(callback) };
}

fn unknown_key(ssl: &SslRef) {
    if let Some(offer) = ssl.ex_data(*OFFER_INDEX) {
        offer.unknown_key.store(true, Ordering::Relaxed);
    }
}

/// Whether the hello offers a session: a TLS 1.3 PSK, a TLS 1.2 ticket, or
/// (from a client that does not offer TLS 1.3) a session ID.
pub fn offered(hello: &ClientHello<'_>) -> bool {
    if hello.get_extension(ExtensionType::PRE_SHARED_KEY).is_some()
        || hello
            .get_extension(ExtensionType::SESSION_TICKET)
            .is_some_and(|t| !t.is_empty())
    {
        return true;
    }
    // TLS 1.3 clients send a random legacy session ID: not an offer.
    if hello
        .get_extension(ExtensionType::SUPPORTED_VERSIONS)
        .is_some()
    {
        return false;
    }
    // The body: version (2), random (32), then the session ID's length.
    hello.as_bytes().get(34).is_some_and(|&len| len > 0)
}

/// Binds this connection's sessions to `context` (resumption on), or makes
/// none resumable (off: no ticket, and a random context), and records the
/// offer for [`outcome`].
pub fn bind(
    ssl: &mut SslRef,
    context: &[u8; 32],
    enabled: bool,
    offered: bool,
) -> Result<(), ErrorStack> {
    let mut random = [0; 32];
    let context = if enabled {
        context
    } else {
        ssl.set_options(boring::ssl::SslOptions::NO_TICKET);
        boring::rand::rand_bytes(&mut random)?;
        &random
    };
    // SAFETY: a live SSL handle, and 32 bytes (the maximum a context may have).
    let ok = unsafe { boring_sys::SSL_set_session_id_context(ssl.as_ptr(), context.as_ptr(), 32) };
    if ok != 1 {
        return Err(ErrorStack::get());
    }
    ssl.set_ex_data(
        *OFFER_INDEX,
        Offer {
            offered,
            disabled: !enabled,
            unknown_key: AtomicBool::new(false),
        },
    );
    Ok(())
}

/// A finished handshake's kind, and why an offered session was not resumed.
pub fn outcome(ssl: &SslRef) -> (Kind, Option<Refused>) {
    if ssl.session_reused() {
        return (Kind::Resumed, None);
    }
    let refused = ssl.ex_data(*OFFER_INDEX).filter(|o| o.offered).map(|o| {
        if o.disabled {
            Refused::Disabled
        } else if o.unknown_key.load(Ordering::Relaxed) {
            Refused::UnknownKey
        } else {
            Refused::NotResumable
        }
    });
    (Kind::Full, refused)
}
