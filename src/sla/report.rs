//! A ticket's service levels as staff see them: its priority's policy run on
//! its history (status changes, public messages) at a given time.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::Serialize;

use super::Calendar;
use super::clock::{self, History, Policy, Target};
use crate::store::TicketRecord;
use crate::ticket::{Priority, Status};

/// The service levels from the configuration file.
#[derive(Debug, Clone)]
pub struct SlaConfig {
    pub policies: HashMap<Priority, Policy>,
    /// Business hours (wall time when the file has none).
    pub calendar: Calendar,
    /// The share of a target's time after which it is at risk.
    pub at_risk: f64,
    /// How often the timer looks at the clocks.
    pub check_every: std::time::Duration,
    /// What a miss sets off, per priority, beyond the escalation.
    pub escalation: HashMap<Priority, Escalation>,
}

/// A policy's escalation settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Escalation {
    /// The users a ticket that missed a target goes to (the `[groups]`
    /// entry the policy names in `escalate_to`): the least busy active one.
    pub group: Vec<String>,
    /// The second level: a miss still unmet this long after it happened
    /// is mailed to the admins.
    pub second_level_after: Option<std::time::Duration>,
}

/// What `GET /api/tickets/{id}` shows under `sla`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlaReport {
    pub priority: Priority,
    pub business_hours: bool,
    pub first_response_due: Option<String>,
    pub first_response_met: Option<String>,
    pub next_response_due: Option<String>,
    pub resolution_due: Option<String>,
    /// The targets missed, each with when.
    pub breached: Vec<Target>,
    pub breached_at: Vec<String>,
    pub at_risk: Vec<Target>,
    /// Waiting on the customer (or resolved): the clocks stand still.
    pub paused: bool,
}

fn at(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// Statuses during which the clocks stand still.
fn pauses(status: &str) -> bool {
    status == Status::Pending.as_str() || status == Status::Resolved.as_str()
}

/// The clocks' view of a ticket: its pauses from the status history, its
/// first public staff message and the customer's unanswered one.
pub fn history_of(rec: &TicketRecord) -> Option<History> {
    let created = at(&rec.created_at)?;
    let mut paused: Vec<(Timestamp, Option<Timestamp>)> = Vec::new();
    for c in rec.history.iter().filter(|c| c.field == "status") {
        let (from, to) = (
            c.from.as_deref().unwrap_or(""),
            c.to.as_deref().unwrap_or(""),
        );
        let Some(when) = at(&c.at) else { continue };
        let open = paused.last().is_some_and(|(_, end)| end.is_none());
        if pauses(to) && !open {
            paused.push((when, None));
        } else if pauses(from)
            && !pauses(to)
            && let Some(last) = paused.last_mut().filter(|_| open)
        {
            last.1 = Some(when);
        }
    }
    let public = rec.messages.iter().filter(|m| !m.internal);
    let first_staff_reply = public
        .clone()
        .filter(|m| m.author_kind == "staff")
        .find_map(|m| at(&m.created_at));
    let last_staff = public
        .clone()
        .filter(|m| m.author_kind == "staff")
        .filter_map(|m| at(&m.created_at))
        .max();
    let waiting_since = public
        .filter(|m| m.author_kind == "customer")
        .filter_map(|m| at(&m.created_at))
        .filter(|t| last_staff.is_none_or(|s| *t > s))
        .min();
    let resolved = (rec.status == Status::Resolved)
        .then(|| paused.last().map(|(start, _)| *start))
        .flatten();
    Some(History {
        created,
        pauses: paused,
        first_staff_reply,
        waiting_since,
        resolved,
    })
}

/// The clocks of `rec` at `now`, with its policy; `None` when its priority
/// has no policy.
pub fn clocks_of(cfg: &SlaConfig, rec: &TicketRecord, now: Timestamp) -> Option<Vec<clock::Clock>> {
    let policy = cfg.policies.get(&rec.priority?)?;
    let history = history_of(rec)?;
    Some(clock::evaluate(
        policy,
        &cfg.calendar,
        &history,
        now,
        cfg.at_risk,
    ))
}

/// The clocks as the store keeps them, by target name.
pub fn stored(clocks: &[clock::Clock]) -> Vec<crate::store::sla::StoredClock> {
    let mut v: Vec<_> = clocks
        .iter()
        .map(|c| crate::store::sla::StoredClock {
            target: c.target.as_str().to_string(),
            due: crate::clock::format_ts(c.due),
            met_at: c.met.map(crate::clock::format_ts),
            breached_at: c.breached_at.map(crate::clock::format_ts),
            at_risk: c.at_risk,
        })
        .collect();
    v.sort_by(|a, b| a.target.cmp(&b.target));
    v
}

/// The report for `rec` at `now`; `None` when its priority has no policy.
pub fn report(cfg: &SlaConfig, rec: &TicketRecord, now: Timestamp) -> Option<SlaReport> {
    let priority = rec.priority?;
    let policy = cfg.policies.get(&priority)?;
    let history = history_of(rec)?;
    let clocks = clock::evaluate(policy, &cfg.calendar, &history, now, cfg.at_risk);
    let due = |t: Target| {
        clocks
            .iter()
            .find(|c| c.target == t)
            .map(|c| crate::clock::format_ts(c.due))
    };
    let paused = history.pauses.last().is_some_and(|(_, end)| end.is_none());
    Some(SlaReport {
        priority,
        business_hours: policy.business_hours,
        first_response_due: due(Target::FirstResponse),
        first_response_met: history.first_staff_reply.map(crate::clock::format_ts),
        next_response_due: due(Target::NextResponse),
        resolution_due: due(Target::Resolution),
        breached: clocks
            .iter()
            .filter(|c| c.breached_at.is_some())
            .map(|c| c.target)
            .collect(),
        breached_at: clocks
            .iter()
            .filter_map(|c| c.breached_at.map(crate::clock::format_ts))
            .collect(),
        at_risk: clocks
            .iter()
            .filter(|c| c.at_risk)
            .map(|c| c.target)
            .collect(),
        paused,
    })
}
