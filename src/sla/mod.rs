//! Service levels (issue 12, in progress): the business-hours calendar
//! their clocks run on (`calendar`), read from the configuration file's
//! `[business_hours]`. The clocks themselves (due times, pauses, at-risk and
//! breach events, time-based escalation) are not built yet; the file's
//! `[sla.*]` sections are checked and reported as not in effect.

pub mod calendar;

pub use calendar::{Calendar, Slot};
