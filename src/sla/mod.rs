//! Service levels (issue 12, in progress). Built so far:
//!
//! - `calendar`: business hours (a time zone, working slots, holidays), read
//!   from the configuration file's `[business_hours]`;
//! - `clock`: the clocks as pure arithmetic: due times, met, at risk and
//!   breached (with the moment of the breach), pauses not counted;
//! - `report`: a ticket's clocks from its history (status changes, public
//!   messages), shown to staff as the API's `sla`;
//! - `timer`: records at-risk and breach events (once, at their own time,
//!   also after downtime), escalates and notifies.
//!
//! Not built yet: reassignment to a group, the second level, and the
//! dashboard's badges and chart; the configuration file reports them as not
//! in effect.

pub mod calendar;
pub mod clock;
pub mod report;
pub mod timer;

pub use calendar::{Calendar, Slot};
pub use report::{SlaConfig, SlaReport};
