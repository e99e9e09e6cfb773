//! Protection against abuse and overload, kept out of the handlers.
//!
//! Why a module of its own: every limit here is a promise to the operator
//! ("one attacker cannot take the service down or lock the team out"), and
//! each needs the same few building blocks — who the client really is
//! ([`client`]), keyed token buckets ([`rate`]) and the login throttle with
//! its bounded password-hashing cost ([`login`]). The web layer only asks
//! "may this go ahead?" and turns a refusal into 429 + `Retry-After`.

pub mod client;
pub mod login;
pub mod rate;

pub use client::{Cidr, ClientIp, TrustedProxies};
pub use login::{LoginGuard, LoginLimits, Refusal};
pub use rate::KeyedLimiter;
