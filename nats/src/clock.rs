//! Wall-clock time in the forms events and tokens carry, read in one place.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The current UTC time in RFC 3339, to the second, e.g. `2026-12-01T20:24:34Z`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_agree() {
        let (ms, secs) = (now_ms(), now_secs());
        assert!(ms / 1000 <= secs + 1 && secs <= ms / 1000 + 1);
        let text = now_rfc3339();
        assert!(text.ends_with('Z') && text.len() == 20, "{text}");
    }
}
