//! Timestamps as fixed-width UTC RFC 3339 strings, so they sort as text in SQL.

use time::OffsetDateTime;
use time::macros::format_description;

pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

pub fn format(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

/// A jiff timestamp (the service-level clocks'), formatted like `now()`.
pub fn format_ts(t: jiff::Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
        .map(format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

/// Now moved by `ms` milliseconds (back when negative), formatted like
/// `now()`: the store's reading of the database server's clock.
pub fn now_plus_ms(ms: i64) -> String {
    let now = OffsetDateTime::now_utc();
    format(
        now.checked_add(time::Duration::milliseconds(ms))
            .unwrap_or(now),
    )
}

/// The time `d` from now, formatted like `now()`.
pub fn after(d: std::time::Duration) -> String {
    let ahead = time::Duration::try_from(d).unwrap_or(time::Duration::ZERO);
    format(
        OffsetDateTime::now_utc()
            .checked_add(ahead)
            .unwrap_or(OffsetDateTime::now_utc()),
    )
}

/// The time `d` ago, formatted like `now()`.
pub fn ago(d: std::time::Duration) -> String {
    let back = time::Duration::try_from(d).unwrap_or(time::Duration::ZERO);
    format(
        OffsetDateTime::now_utc()
            .checked_sub(back)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

/// The last `n` UTC dates (YYYY-MM-DD), oldest first, ending today.
pub fn last_days(n: u32) -> Vec<String> {
    let today = OffsetDateTime::now_utc().date();
    (0..n)
        .rev()
        .filter_map(|back| today.checked_sub(time::Duration::days(i64::from(back))))
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .collect()
}

/// The Mondays (`YYYY-MM-DD`, UTC) of the last `n` weeks, oldest first,
/// this week's last.
pub fn last_weeks(n: u32) -> Vec<String> {
    let today = OffsetDateTime::now_utc().date();
    let monday = today
        .checked_sub(time::Duration::days(i64::from(
            today.weekday().number_days_from_monday(),
        )))
        .unwrap_or(today);
    (0..n)
        .rev()
        .filter_map(|back| monday.checked_sub(time::Duration::weeks(i64::from(back))))
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.6 +02:00);
        assert_eq!(super::format(t), "2026-01-02T01:04:05.600Z");
    }

    #[test]
    fn last_days_end_today() {
        let d = super::last_days(14);
        assert_eq!(d.len(), 14);
        assert_eq!(d[13], super::now()[..10]);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
    }
}
