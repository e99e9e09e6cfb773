//! smart-support: a self-hosted customer-support triage service.
//!
//! Data flows one way: HTTP ([`web`]) → [`store`] (ticket committed) →
//! [`worker`] → [`pipeline`] → [`agents`] → result committed → tracker.

pub mod agents;
pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod desk;
pub mod eval;
pub mod feed;
pub mod guard;
pub mod inference;
pub mod kb;
pub mod models;
pub mod notify;
pub mod observe;
pub mod pipeline;
pub mod shutdown;
pub mod sla;
pub mod store;
pub mod text;
pub mod ticket;
pub mod timeline;
pub mod triage;
pub mod web;
pub mod worker;
