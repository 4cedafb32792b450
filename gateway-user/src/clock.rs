//! The clock: the time now, and timestamps as the API and logs show them.
//!
//! One module that everything else (revocation, PKI, the control plane) reads
//! time from, so none of them imports another for it.

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2026-11-23T10:00:00Z` for Unix seconds (the number itself if out of range).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `2026-12-07T23:04:05.123Z`: RFC 3339 in UTC with milliseconds, always
/// three digits (the logs' timestamps), so that they sort as text.
pub fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t).to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Unix seconds of an RFC 3339 time (`2026-11-23T10:00:00Z`, any offset).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_keep_three_digits_and_sort_as_text() {
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let whole = rfc3339_ms(at(1_795_428_000_000));
        assert_eq!(whole, "2026-11-23T10:00:00.000Z");
        assert_eq!(
            rfc3339_ms(at(1_795_428_000_120)),
            "2026-11-23T10:00:00.120Z"
        );
        assert!(whole < rfc3339_ms(at(1_795_428_000_001)));
        assert!(parse_rfc3339(&whole).is_some());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_795_428_000), "2026-11-23T10:00:00Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
        assert!(now() > 1_700_000_000);
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00Z"), Some(1_795_428_000));
        assert_eq!(
            parse_rfc3339("2026-11-23T11:00:00+01:00"),
            Some(1_795_428_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
