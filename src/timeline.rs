//! The customer-facing timeline, derived from a ticket's stored events so the
//! store, the API, the pages and `triage` all show the same four steps.

use serde::Serialize;

use crate::ticket::{Event, EventKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Completed,
    Active,
    Pending,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub state: StepState,
    pub at: Option<String>,
    pub detail: Option<String>,
}

fn find(events: &[Event], kind: EventKind) -> Option<&Event> {
    events.iter().find(|e| e.kind == kind)
}

fn done(step: &'static str, e: &Event) -> Step {
    let detail = (!e.detail.is_empty()).then(|| e.detail.clone());
    Step {
        step,
        state: StepState::Completed,
        at: Some(e.at.clone()),
        detail,
    }
}

fn waiting(step: &'static str, state: StepState) -> Step {
    Step {
        step,
        state,
        at: None,
        detail: None,
    }
}

pub fn build(events: &[Event]) -> Vec<Step> {
    let ai_done = find(events, EventKind::AiCompleted);
    let submitted = match find(events, EventKind::Submitted) {
        Some(e) => done("Ticket Submitted", e),
        None => waiting("Ticket Submitted", StepState::Pending),
    };
    let processing = match (ai_done, find(events, EventKind::ProcessingStarted)) {
        (Some(e), _) => done("AI Processing", e),
        (None, Some(_)) => waiting("AI Processing", StepState::Active),
        (None, None) => waiting("AI Processing", StepState::Pending),
    };
    // Resolved unless a later reply reopened it.
    let last_resolution = events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, EventKind::Resolved | EventKind::Reopened))
        .filter(|e| e.kind == EventKind::Resolved);
    let resolution = match last_resolution {
        Some(e) => done("Resolution", e),
        None => waiting("Resolution", StepState::Pending),
    };
    let escalation = match (find(events, EventKind::Escalated), ai_done) {
        (Some(e), _) => done("Escalation", e),
        (None, Some(_)) => waiting("Escalation", StepState::Skipped),
        (None, None) => waiting("Escalation", StepState::Pending),
    };
    vec![submitted, processing, resolution, escalation]
}

/// Share of the timeline that is behind the ticket, 0–100, for the progress bar.
pub fn progress(steps: &[Step]) -> u32 {
    if steps
        .iter()
        .any(|s| s.step == "Resolution" && s.state == StepState::Completed)
    {
        return 100;
    }
    let finished = steps
        .iter()
        .filter(|s| matches!(s.state, StepState::Completed | StepState::Skipped))
        .count() as u32;
    let active = steps.iter().any(|s| s.state == StepState::Active) as u32;
    (finished * 100 + active * 50) / steps.len().max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event {
            kind,
            at: "t".into(),
            detail: String::new(),
        }
    }

    #[test]
    fn steps_follow_the_events() {
        use StepState::*;
        let states = |evs: &[Event]| build(evs).iter().map(|s| s.state).collect::<Vec<_>>();
        let mut evs = vec![ev(EventKind::Submitted)];
        assert_eq!(states(&evs), [Completed, Pending, Pending, Pending]);
        evs.push(ev(EventKind::ProcessingStarted));
        assert_eq!(states(&evs), [Completed, Active, Pending, Pending]);
        evs.push(ev(EventKind::AiCompleted));
        assert_eq!(states(&evs), [Completed, Completed, Pending, Skipped]);
        assert_eq!(progress(&build(&evs)), 75);
        evs.push(ev(EventKind::Escalated));
        assert_eq!(states(&evs), [Completed, Completed, Pending, Completed]);
        evs.push(ev(EventKind::Resolved));
        assert_eq!(states(&evs), [Completed, Completed, Completed, Completed]);
        assert_eq!(progress(&build(&evs)), 100);
    }
}
