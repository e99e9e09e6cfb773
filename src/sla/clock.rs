//! Service-level clocks as pure arithmetic: from a policy, a calendar and a
//! ticket's history, the due time of each target, whether it is met, at
//! risk or breached, and when it was breached. Time is passed in (`now`),
//! never read, so every case (weekends, holidays, pauses, a reopened
//! ticket, a breach that happened while the service was down) is a plain
//! unit test; the breach time is the due time itself, so a breach found
//! late is still recorded when it happened.
//!
//! - **First response** runs from creation to the first public staff
//!   message.
//! - **Next response** runs from a customer message that staff have not
//!   answered yet to the next public staff message.
//! - **Resolution** runs from creation to resolution.
//!
//! Paused time (the ticket waiting on the customer, or resolved until it is
//! reopened) is not counted: a due time moves on by the working time the
//! pauses took.

use std::time::Duration;

use jiff::Timestamp;

use super::Calendar;

/// The three targets, spelled as in the configuration and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::FirstResponse => "first_response",
            Target::NextResponse => "next_response",
            Target::Resolution => "resolution",
        }
    }
}

/// One priority's targets; `business_hours` runs them on the calendar,
/// otherwise on wall time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub first_response: Option<Duration>,
    pub next_response: Option<Duration>,
    pub resolution: Option<Duration>,
    pub business_hours: bool,
}

/// What the clocks need to know about a ticket.
#[derive(Debug, Clone)]
pub struct History {
    pub created: Timestamp,
    /// Paused intervals, oldest first; the last may still be open.
    pub pauses: Vec<(Timestamp, Option<Timestamp>)>,
    pub first_staff_reply: Option<Timestamp>,
    /// The oldest customer message after the latest public staff message.
    pub waiting_since: Option<Timestamp>,
    pub resolved: Option<Timestamp>,
}

/// One target's state now.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    pub target: Target,
    pub due: Timestamp,
    /// When the target was met, if it was.
    pub met: Option<Timestamp>,
    /// The moment it was breached (its due time), if it was.
    pub breached_at: Option<Timestamp>,
    pub at_risk: bool,
}

/// The working time in `[a, b]` minus what the pauses cover of it.
fn working(
    cal: &Calendar,
    a: Timestamp,
    b: Timestamp,
    pauses: &[(Timestamp, Option<Timestamp>)],
    now: Timestamp,
) -> Duration {
    let paused: Duration = pauses
        .iter()
        .map(|(p, q)| {
            let (p, q) = ((*p).max(a), q.unwrap_or(now).min(b));
            if q > p {
                cal.between(p, q)
            } else {
                Duration::ZERO
            }
        })
        .sum();
    cal.between(a, b).saturating_sub(paused)
}

/// The instant when `target` of unpaused working time has passed after
/// `start` (open pauses last until `now`).
pub fn due(
    cal: &Calendar,
    start: Timestamp,
    target: Duration,
    pauses: &[(Timestamp, Option<Timestamp>)],
    now: Timestamp,
) -> Option<Timestamp> {
    let mut extra = Duration::ZERO;
    let mut at = cal.add(start, target)?;
    // Each round adds the pauses the last due time covered; they are finite,
    // so this settles (the bound only guards against a pathological input).
    for _ in 0..64 {
        let paused = cal
            .between(start, at)
            .saturating_sub(working(cal, start, at, pauses, now));
        if paused == extra {
            return Some(at);
        }
        extra = paused;
        at = cal.add(start, target + extra)?;
    }
    Some(at)
}

/// The clocks of `policy` for a ticket with `history`, at `now`; a share
/// `at_risk` (0.8) of a target's time used makes it at risk.
pub fn evaluate(
    policy: &Policy,
    business: &Calendar,
    history: &History,
    now: Timestamp,
    at_risk: f64,
) -> Vec<Clock> {
    let always = Calendar::always();
    let cal = if policy.business_hours {
        business
    } else {
        &always
    };
    let mut clocks = Vec::new();
    let mut push = |target: Target,
                    goal: Option<Duration>,
                    start: Option<Timestamp>,
                    met: Option<Timestamp>| {
        let (Some(goal), Some(start)) = (goal, start) else {
            return;
        };
        let Some(due_at) = due(cal, start, goal, &history.pauses, now) else {
            return;
        };
        let end = met.unwrap_or(now);
        let breached_at = (end > due_at).then_some(due_at);
        let used = working(cal, start, now.min(due_at), &history.pauses, now);
        let risky = met.is_none()
            && breached_at.is_none()
            && used.as_secs_f64() >= at_risk * goal.as_secs_f64();
        clocks.push(Clock {
            target,
            due: due_at,
            met,
            breached_at,
            at_risk: risky,
        });
    };
    push(
        Target::FirstResponse,
        policy.first_response,
        Some(history.created),
        history.first_staff_reply,
    );
    push(
        Target::NextResponse,
        policy.next_response,
        history.waiting_since,
        None,
    );
    push(
        Target::Resolution,
        policy.resolution,
        Some(history.created),
        history.resolved,
    );
    clocks
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::Slot;
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn h(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    /// Mon–Fri 09:00–17:00 UTC, Christmas off.
    fn office() -> Calendar {
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
        let holidays: BTreeSet<_> = ["2026-12-25".parse().expect("date")].into_iter().collect();
        Calendar::new("UTC", week, holidays).expect("calendar")
    }

    fn history(created: &str) -> History {
        History {
            created: ts(created),
            pauses: vec![],
            first_staff_reply: None,
            waiting_since: None,
            resolved: None,
        }
    }

    fn clock(clocks: &[Clock], t: Target) -> &Clock {
        clocks.iter().find(|c| c.target == t).expect("clock")
    }

    #[test]
    fn wall_time_first_response_is_met_at_risk_or_breached() {
        let p = Policy {
            first_response: Some(Duration::from_secs(60)),
            resolution: Some(h(4)),
            ..Default::default()
        };
        let cal = office();
        let mut hist = history("2026-11-28T12:00:00Z"); // a Saturday: wall time ignores it
        let at = |s: &str| evaluate(&p, &cal, &hist, ts(s), 0.8);
        let c = at("2026-11-28T12:00:30Z");
        let first = clock(&c, Target::FirstResponse);
        assert_eq!(first.due, ts("2026-11-28T12:01:00Z"));
        assert!(!first.at_risk && first.breached_at.is_none());
        assert!(clock(&at("2026-11-28T12:00:50Z"), Target::FirstResponse).at_risk);
        let late = at("2026-11-28T12:05:00Z");
        assert_eq!(
            clock(&late, Target::FirstResponse).breached_at,
            Some(ts("2026-11-28T12:01:00Z"))
        );
        assert!(!clock(&late, Target::FirstResponse).at_risk);
        // Answered in time: met, not breached, whenever it is evaluated.
        hist.first_staff_reply = Some(ts("2026-11-28T12:00:40Z"));
        let c = evaluate(&p, &cal, &hist, ts("2026-11-29T00:00:00Z"), 0.8);
        let first = clock(&c, Target::FirstResponse);
        assert_eq!(
            (first.met, first.breached_at),
            (hist.first_staff_reply, None)
        );
        // Resolution was not: 4 h after creation.
        assert_eq!(
            clock(&c, Target::Resolution).breached_at,
            Some(ts("2026-11-28T16:00:00Z"))
        );
    }

    #[test]
    fn business_hours_skip_weekends_and_holidays() {
        let p = Policy {
            resolution: Some(h(4)),
            business_hours: true,
            ..Default::default()
        };
        let cal = office();
        // Friday 15:00: two hours that day, two on Monday.
        let c = evaluate(
            &p,
            &cal,
            &history("2026-11-27T15:00:00Z"),
            ts("2026-11-28T10:00:00Z"),
            0.8,
        );
        assert_eq!(
            clock(&c, Target::Resolution).due,
            ts("2026-11-30T11:00:00Z")
        );
        // Christmas Eve (Thursday) 16:00: one hour, Christmas closed, the
        // weekend closed, three hours on Monday the 28th.
        let c = evaluate(
            &p,
            &cal,
            &history("2026-12-24T16:00:00Z"),
            ts("2026-12-24T16:00:00Z"),
            0.8,
        );
        assert_eq!(
            clock(&c, Target::Resolution).due,
            ts("2026-12-28T12:00:00Z")
        );
    }

    #[test]
    fn a_pause_stops_the_clock_and_moves_the_due_time() {
        let p = Policy {
            resolution: Some(h(4)),
            ..Default::default()
        };
        let cal = office();
        let mut hist = history("2026-11-30T08:00:00Z");
        // Waiting on the customer 09:00–11:00: due 14:00 instead of 12:00.
        hist.pauses = vec![(ts("2026-11-30T09:00:00Z"), Some(ts("2026-11-30T11:00:00Z")))];
        let c = evaluate(&p, &cal, &hist, ts("2026-11-30T12:30:00Z"), 0.8);
        let r = clock(&c, Target::Resolution);
        assert_eq!(r.due, ts("2026-11-30T14:00:00Z"));
        assert!(r.breached_at.is_none());
        // 2.5 h of 4 used at 12:30: not yet at risk; at 13:20, 3h20 (> 80 %).
        assert!(!r.at_risk);
        assert!(
            clock(
                &evaluate(&p, &cal, &hist, ts("2026-11-30T13:20:00Z"), 0.8),
                Target::Resolution
            )
            .at_risk
        );
        // Still paused (open pause): the due time keeps moving with now.
        hist.pauses = vec![(ts("2026-11-30T09:00:00Z"), None)];
        let c = evaluate(&p, &cal, &hist, ts("2026-11-30T20:00:00Z"), 0.8);
        let r = clock(&c, Target::Resolution);
        assert_eq!(r.due, ts("2026-11-30T23:00:00Z"));
        assert!(r.breached_at.is_none() && !r.at_risk);
    }

    #[test]
    fn a_reopened_ticket_counts_the_resolved_time_as_paused() {
        let p = Policy {
            resolution: Some(h(4)),
            ..Default::default()
        };
        let cal = office();
        let mut hist = history("2026-11-30T08:00:00Z");
        // Resolved at 10:00, reopened by the customer at 15:00.
        hist.pauses = vec![(ts("2026-11-30T10:00:00Z"), Some(ts("2026-11-30T15:00:00Z")))];
        let c = evaluate(&p, &cal, &hist, ts("2026-11-30T15:30:00Z"), 0.8);
        assert_eq!(
            clock(&c, Target::Resolution).due,
            ts("2026-11-30T17:00:00Z")
        );
    }

    #[test]
    fn next_response_runs_from_the_customers_unanswered_message() {
        let p = Policy {
            next_response: Some(h(2)),
            business_hours: true,
            ..Default::default()
        };
        let cal = office();
        let mut hist = history("2026-11-30T09:00:00Z");
        let c = evaluate(&p, &cal, &hist, ts("2026-11-30T12:00:00Z"), 0.8);
        assert!(c.is_empty(), "no customer message waiting: no clock");
        hist.waiting_since = Some(ts("2026-11-30T16:00:00Z"));
        let c = evaluate(&p, &cal, &hist, ts("2026-11-30T16:30:00Z"), 0.8);
        assert_eq!(
            clock(&c, Target::NextResponse).due,
            ts("2026-12-01T10:00:00Z")
        );
    }

    #[test]
    fn a_breach_during_downtime_is_dated_when_it_happened() {
        let p = Policy {
            first_response: Some(h(1)),
            ..Default::default()
        };
        let cal = office();
        let hist = history("2026-11-30T10:00:00Z");
        // The service was down from 10:30 to 18:00; evaluated at restart.
        let c = evaluate(&p, &cal, &hist, ts("2026-11-30T18:00:00Z"), 0.8);
        assert_eq!(
            clock(&c, Target::FirstResponse).breached_at,
            Some(ts("2026-11-30T11:00:00Z"))
        );
    }

    #[test]
    fn due_settles_with_many_pauses() {
        let cal = Calendar::always();
        let start = ts("2026-11-30T00:00:00Z");
        // Ten one-hour pauses, one every two hours.
        let pauses: Vec<_> = (0..10)
            .map(|i| {
                let a = start
                    .checked_add(jiff::SignedDuration::from_hours(2 * i + 1))
                    .expect("ts");
                (
                    a,
                    Some(
                        a.checked_add(jiff::SignedDuration::from_hours(1))
                            .expect("ts"),
                    ),
                )
            })
            .collect();
        // Five hours of work: 0–1, 2–3, 4–5, 6–7, 8–9 → due at 09:00.
        assert_eq!(
            due(&cal, start, h(5), &pauses, ts("2026-12-05T00:00:00Z")),
            Some(ts("2026-11-30T09:00:00Z"))
        );
    }
}
