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

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.6 +02:00);
        assert_eq!(super::format(t), "2026-01-02T01:04:05.600Z");
    }
}
