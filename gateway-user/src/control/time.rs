//! Timestamps as the API shows them (RFC 3339, UTC).

/// `2026-11-23T10:00:00Z` for Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    crate::tls::revocation::now()
}
