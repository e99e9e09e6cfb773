//! Service levels (issue 12, in progress). Built so far:
//!
//! - `calendar`: business hours (a time zone, working slots, holidays), read
//!   from the configuration file's `[business_hours]`;
//! - `clock`: the clocks as pure arithmetic: due times, met, at risk and
//!   breached (with the moment of the breach), pauses not counted.
//!
//! Not built yet: storing the clocks per ticket, the Pending status, the
//! timer that records at-risk and breach events and escalates, and their
//! display; until then the file's `[sla.*]` sections are checked and
//! reported as not in effect.

pub mod calendar;
pub mod clock;

pub use calendar::{Calendar, Slot};
