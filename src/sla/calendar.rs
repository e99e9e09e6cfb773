//! Business hours: a time zone (IANA, daylight saving included), working
//! slots per weekday and holidays; and the two sums a service level needs:
//! the instant when a span of working time has passed (`add`), and the
//! working time between two instants (`between`).
//!
//! Slots are local wall-clock times. A slot whose end is not after its start
//! crosses midnight (`22:00-06:00`) and belongs to the day it starts, also
//! for holidays; `24:00` ends a slot at midnight. A slot is turned into real
//! instants in the zone, so on the night clocks go forward a slot of
//! 01:00–04:00 holds two real hours, and on the night they go back, four.
//! Wall time (`Calendar::always`) is the calendar that is always open.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// One working slot of a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: Time,
    /// `None`: midnight at the end of the day (`24:00`).
    pub end: Option<Time>,
}

impl Slot {
    /// `"09:00-17:00"`, `"22:00-06:00"`, `"00:00-24:00"`.
    pub fn parse(s: &str) -> Result<Slot, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("'{s}' is not a slot like \"09:00-17:00\""))?;
        let time = |t: &str| -> Result<Time, String> {
            let (h, m) = t
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("'{t}' is not a time like 09:00"))?;
            let h: i8 = h
                .parse()
                .map_err(|_| format!("'{t}' is not a time like 09:00"))?;
            let m: i8 = m
                .parse()
                .map_err(|_| format!("'{t}' is not a time like 09:00"))?;
            Time::new(h, m, 0, 0).map_err(|_| format!("'{t}' is not a time of day"))
        };
        let start = time(a)?;
        let end = if b.trim() == "24:00" {
            None
        } else {
            Some(time(b)?)
        };
        if end == Some(start) {
            return Err(format!("'{s}' is empty"));
        }
        Ok(Slot { start, end })
    }

    /// The slot on `day` as real instants in `tz`.
    fn on(&self, day: Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        let start = day.to_datetime(self.start);
        let end = match self.end {
            Some(e) if e > self.start => day.to_datetime(e),
            Some(e) => day.tomorrow().ok()?.to_datetime(e),
            None => day.tomorrow().ok()?.to_datetime(Time::midnight()),
        };
        // A wall time that does not exist (clocks went forward) counts from
        // the moment after the gap; an ambiguous one from its first instant.
        let a = tz.to_ambiguous_timestamp(start).compatible().ok()?;
        let b = tz.to_ambiguous_timestamp(end).compatible().ok()?;
        (b > a).then_some((a, b))
    }
}

/// When work is done.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
    /// Monday first.
    week: [Vec<Slot>; 7],
    holidays: BTreeSet<Date>,
}

/// How far ahead `add` looks before it gives up (a calendar whose every
/// day is a holiday).
const HORIZON_DAYS: i64 = 3 * 366;

fn index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl Calendar {
    /// Open all the time: wall time.
    pub fn always() -> Calendar {
        let all = Slot {
            start: Time::midnight(),
            end: None,
        };
        Calendar {
            tz: TimeZone::UTC,
            week: std::array::from_fn(|_| vec![all]),
            holidays: BTreeSet::new(),
        }
    }

    /// A calendar in zone `tz` (an IANA name) with `week[0]` Monday's slots.
    pub fn new(
        tz: &str,
        week: [Vec<Slot>; 7],
        holidays: BTreeSet<Date>,
    ) -> Result<Calendar, String> {
        let tz = TimeZone::get(tz).map_err(|_| format!("'{tz}' is not an IANA time zone"))?;
        if week.iter().all(Vec::is_empty) {
            return Err("no working slot on any day".into());
        }
        Ok(Calendar { tz, week, holidays })
    }

    /// The open intervals of the day `day` (local), in order.
    fn open_on(&self, day: Date) -> Vec<(Timestamp, Timestamp)> {
        if self.holidays.contains(&day) {
            return Vec::new();
        }
        let mut v: Vec<_> = self.week[index(day.weekday())]
            .iter()
            .filter_map(|s| s.on(day, &self.tz))
            .collect();
        v.sort();
        v
    }

    /// The local date of `t`, one day earlier: a slot that started then
    /// may still be open at `t`.
    fn first_day(&self, t: Timestamp) -> Date {
        let d = t.to_zoned(self.tz.clone()).date();
        d.yesterday().unwrap_or(d)
    }

    /// The instant by which `work` of working time has passed after `from`;
    /// `None` when the calendar has no working time in the next three years.
    pub fn add(&self, from: Timestamp, work: Duration) -> Option<Timestamp> {
        let mut left = jiff::SignedDuration::try_from(work).ok()?;
        let mut day = self.first_day(from);
        for _ in 0..HORIZON_DAYS {
            for (a, b) in self.open_on(day) {
                if b <= from {
                    continue;
                }
                let a = a.max(from);
                let span = b.duration_since(a);
                if left <= span {
                    return a.checked_add(left).ok();
                }
                left -= span;
            }
            day = day.checked_add(1.day()).ok()?;
        }
        None
    }

    /// Working time between `a` and `b` (zero when `b` is not after `a`).
    pub fn between(&self, a: Timestamp, b: Timestamp) -> Duration {
        let mut total = jiff::SignedDuration::ZERO;
        if b <= a {
            return Duration::ZERO;
        }
        let last = b.to_zoned(self.tz.clone()).date();
        let mut day = self.first_day(a);
        while day <= last {
            for (x, y) in self.open_on(day) {
                let (x, y) = (x.max(a), y.min(b));
                if y > x {
                    total += y.duration_since(x);
                }
            }
            match day.checked_add(1.day()) {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        Duration::try_from(total).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn hours(h: f64) -> Duration {
        Duration::from_secs_f64(h * 3600.0)
    }

    /// Mon–Fri 09:00–17:00 in Berlin.
    fn office(holidays: &[&str]) -> Calendar {
        let day = vec![Slot::parse("09:00-17:00").expect("slot")];
        let week = [
            day.clone(),
            day.clone(),
            day.clone(),
            day.clone(),
            day,
            vec![],
            vec![],
        ];
        let h = holidays.iter().map(|d| d.parse().expect("date")).collect();
        Calendar::new("Europe/Berlin", week, h).expect("calendar")
    }

    #[test]
    fn slots_parse_and_bad_ones_are_named() {
        assert_eq!(
            Slot::parse("09:00-17:30").expect("ok"),
            Slot {
                start: Time::constant(9, 0, 0, 0),
                end: Some(Time::constant(17, 30, 0, 0))
            }
        );
        assert_eq!(Slot::parse("00:00-24:00").expect("ok").end, None);
        for bad in [
            "9-17",
            "09:00",
            "25:00-26:00",
            "09:00-09:00",
            "nine-five",
            "09:60-10:00",
        ] {
            assert!(Slot::parse(bad).is_err(), "{bad}");
        }
        assert!(Calendar::new("Mars/Olympus", Default::default(), BTreeSet::new()).is_err());
        assert!(Calendar::new("Europe/Berlin", Default::default(), BTreeSet::new()).is_err());
    }

    #[test]
    fn wall_time_is_plain_addition() {
        let c = Calendar::always();
        let t = ts("2026-03-28T23:00:00Z");
        assert_eq!(c.add(t, hours(4.0)), Some(ts("2026-03-29T03:00:00Z")));
        assert_eq!(c.between(t, ts("2026-03-30T23:00:00Z")), hours(48.0));
    }

    #[test]
    fn working_time_skips_nights_and_weekends() {
        let c = office(&[]);
        // Friday 2026-11-27, 16:00 in Berlin (UTC+1): one hour left that day,
        // then Monday 09:00.
        let fri = ts("2026-11-27T15:00:00Z");
        assert_eq!(c.add(fri, hours(3.0)), Some(ts("2026-11-30T10:00:00Z")));
        assert_eq!(c.between(fri, ts("2026-11-30T10:00:00Z")), hours(3.0));
        // Submitted on Saturday: the clock starts Monday 09:00.
        let sat = ts("2026-11-28T12:00:00Z");
        assert_eq!(c.add(sat, hours(1.0)), Some(ts("2026-11-30T09:00:00Z")));
        assert_eq!(c.between(sat, ts("2026-11-30T08:00:00Z")), Duration::ZERO);
        // Exactly at closing time.
        assert_eq!(
            c.add(ts("2026-11-30T08:00:00Z"), hours(8.0)),
            Some(ts("2026-11-30T16:00:00Z"))
        );
    }

    #[test]
    fn holidays_are_closed() {
        // Christmas Friday and the Monday after.
        let c = office(&["2026-12-25", "2026-12-28"]);
        let thu = ts("2026-12-24T15:00:00Z"); // 16:00 local
        assert_eq!(c.add(thu, hours(2.0)), Some(ts("2026-12-29T09:00:00Z")));
        assert_eq!(c.between(thu, ts("2026-12-29T09:00:00Z")), hours(2.0));
    }

    #[test]
    fn a_slot_across_midnight_belongs_to_its_first_day() {
        // A night desk: Monday to Friday 22:00–06:00 in UTC.
        let night = vec![Slot::parse("22:00-06:00").expect("slot")];
        let week = [
            night.clone(),
            night.clone(),
            night.clone(),
            night.clone(),
            night,
            vec![],
            vec![],
        ];
        let c = Calendar::new("UTC", week.clone(), BTreeSet::new()).expect("calendar");
        // Tuesday 03:00 is inside Monday's slot.
        let tue = ts("2026-12-01T03:00:00Z");
        assert_eq!(c.add(tue, hours(2.0)), Some(ts("2026-12-01T05:00:00Z")));
        assert_eq!(c.add(tue, hours(4.0)), Some(ts("2026-12-01T23:00:00Z")));
        // Friday's slot runs into Saturday; nothing opens on Saturday night.
        let fri = ts("2026-12-04T23:00:00Z");
        assert_eq!(c.add(fri, hours(8.0)), Some(ts("2026-12-07T23:00:00Z")));
        // Monday a holiday: its night slot is closed, Tuesday 03:00 too.
        let h = ["2026-11-30".parse().expect("date")].into_iter().collect();
        let c = Calendar::new("UTC", week, h).expect("calendar");
        assert_eq!(c.add(tue, hours(1.0)), Some(ts("2026-12-01T23:00:00Z")));
    }

    #[test]
    fn daylight_saving_changes_count_real_hours() {
        // Berlin goes forward on 2026-03-29 (02:00 → 03:00) and back on
        // 2026-10-25 (03:00 → 02:00). A Sunday desk 01:00–04:00.
        let desk = vec![Slot::parse("01:00-04:00").expect("slot")];
        let mut week: [Vec<Slot>; 7] = Default::default();
        week[6] = desk;
        let c = Calendar::new("Europe/Berlin", week, BTreeSet::new()).expect("calendar");
        // Noon UTC the day before to noon UTC that Sunday holds the slot.
        let day = |before: &str, d: &str| {
            c.between(
                ts(&format!("{before}T12:00:00Z")),
                ts(&format!("{d}T12:00:00Z")),
            )
        };
        assert_eq!(day("2026-03-21", "2026-03-22"), hours(3.0));
        assert_eq!(day("2026-03-28", "2026-03-29"), hours(2.0));
        // Autumn: 01:00 CEST is 23:00Z the day before, 04:00 CET is 03:00Z.
        assert_eq!(day("2026-10-24", "2026-10-25"), hours(4.0));
        assert_eq!(
            c.add(ts("2026-10-24T23:00:00Z"), hours(4.0)),
            Some(ts("2026-10-25T03:00:00Z"))
        );
        // Spring: 01:00 CET is 00:00Z; two real hours later it is 04:00 CEST.
        assert_eq!(
            c.add(ts("2026-03-29T00:00:00Z"), hours(2.0)),
            Some(ts("2026-03-29T02:00:00Z"))
        );
        // Whole days: the spring Sunday has 23 hours, the autumn one 25.
        let mut week: [Vec<Slot>; 7] = Default::default();
        week[6] = vec![Slot::parse("00:00-24:00").expect("slot")];
        let c = Calendar::new("Europe/Berlin", week, BTreeSet::new()).expect("calendar");
        assert_eq!(
            c.between(ts("2026-03-28T12:00:00Z"), ts("2026-03-30T12:00:00Z")),
            hours(23.0)
        );
        assert_eq!(
            c.between(ts("2026-10-24T12:00:00Z"), ts("2026-10-26T12:00:00Z")),
            hours(25.0)
        );
    }

    #[test]
    fn a_calendar_without_working_time_ahead_gives_none() {
        let mut week: [Vec<Slot>; 7] = Default::default();
        week[0] = vec![Slot::parse("09:00-10:00").expect("slot")];
        // Every Monday for four years is a holiday.
        let mut h = BTreeSet::new();
        let mut d: Date = "2026-11-30".parse().expect("date");
        for _ in 0..210 {
            h.insert(d);
            d = d.checked_add(7.days()).expect("date");
        }
        let c = Calendar::new("UTC", week, h).expect("calendar");
        assert_eq!(c.add(ts("2026-11-25T00:00:00Z"), hours(1.0)), None);
    }
}
