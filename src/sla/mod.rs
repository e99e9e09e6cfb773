//! Service levels: targets per priority (first response, next response,
//! resolution) on wall time or business hours, paused while a ticket waits
//! on the customer.
//!
//! - `calendar`: business hours (a time zone, working slots, holidays), read
//!   from the configuration file's `[business_hours]`;
//! - `clock`: the clocks as pure arithmetic: due times, met, at risk and
//!   breached (with the moment of the breach), pauses not counted;
//! - `report`: a ticket's clocks from its history (status changes, public
//!   messages), shown to staff as the API's `sla` and stored for the
//!   dashboard;
//! - `timer`: evaluates a ticket after each change and all open tickets on
//!   a timer; records at-risk, breach and second-level events (once, at
//!   their own time, also after downtime), which escalate, reassign to the
//!   policy's group and notify (`store::sla`).

pub mod calendar;
pub mod clock;
pub mod report;
pub mod timer;

pub use calendar::{Calendar, Slot};
pub use report::{SlaConfig, SlaReport};
