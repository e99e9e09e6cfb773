//! Webhooks as the Standard Webhooks specification has them
//! (<https://www.standardwebhooks.com>): each message carries `webhook-id`
//! (the same on every try, so receivers can drop duplicates),
//! `webhook-timestamp` (seconds, of this try) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the
//! endpoint's `whsec_` secret, base64-decoded).
//!
//! Delivery is at least once and in order per ticket and endpoint: a message
//! waits while an earlier one for the same ticket is still being retried.
//! A failed try is retried after the next delay of the schedule (with
//! ±20 % jitter, so endpoints coming back are not hit by every sender at
//! once), or after the endpoint's `Retry-After` when it sends one; after the
//! last delay the message is marked failed and can be replayed from
//! `/admin/webhooks`. An endpoint that fails `disable_after` times in a row
//! is disabled (its messages wait, nothing is dropped) until an admin
//! enables it again. Only `http`/`https` URLs from the configuration file
//! are ever called, redirects are not followed, and each try has 10 s.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The events a webhook can subscribe to, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "ticket.created")]
    TicketCreated,
    #[serde(rename = "ticket.classified")]
    TicketClassified,
    #[serde(rename = "ticket.escalated")]
    TicketEscalated,
    #[serde(rename = "ticket.message")]
    TicketMessage,
    #[serde(rename = "ticket.resolved")]
    TicketResolved,
    #[serde(rename = "ticket.assigned")]
    TicketAssigned,
    #[serde(rename = "sla.at_risk")]
    SlaAtRisk,
    #[serde(rename = "sla.breached")]
    SlaBreached,
}

impl EventType {
    pub const ALL: &'static [EventType] = &[
        EventType::TicketCreated,
        EventType::TicketClassified,
        EventType::TicketEscalated,
        EventType::TicketMessage,
        EventType::TicketResolved,
        EventType::TicketAssigned,
        EventType::SlaAtRisk,
        EventType::SlaBreached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TicketCreated => "ticket.created",
            EventType::TicketClassified => "ticket.classified",
            EventType::TicketEscalated => "ticket.escalated",
            EventType::TicketMessage => "ticket.message",
            EventType::TicketResolved => "ticket.resolved",
            EventType::TicketAssigned => "ticket.assigned",
            EventType::SlaAtRisk => "sla.at_risk",
            EventType::SlaBreached => "sla.breached",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|e| e.as_str() == s)
    }
}

/// An endpoint's secret: the bytes behind `whsec_` + base64. Never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// `whsec_` followed by base64 of 24 to 64 random bytes.
    pub fn parse(s: &str) -> Result<Secret, String> {
        let b64 = s
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with 'whsec_'")?;
        let bytes = B64
            .decode(b64)
            .map_err(|_| "a webhook secret is 'whsec_' followed by base64")?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!(
                "a webhook secret holds 24 to 64 bytes (this one {})",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }
}

/// `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Which events an endpoint receives: `["*"]` for all, or names.
#[derive(Debug, Clone, PartialEq)]
pub enum Subscription {
    All,
    Only(Vec<EventType>),
}

impl Subscription {
    pub fn parse(names: &[String]) -> Result<Subscription, String> {
        if names.iter().any(|n| n == "*") {
            return Ok(Subscription::All);
        }
        if names.is_empty() {
            return Err("'events' lists at least one event, or \"*\"".into());
        }
        names
            .iter()
            .map(|n| {
                EventType::parse(n).ok_or_else(|| {
                    format!(
                        "unknown event '{n}' (known: {}, or \"*\")",
                        EventType::ALL
                            .iter()
                            .map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Subscription::Only)
    }

    pub fn wants(&self, e: EventType) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Only(list) => list.contains(&e),
        }
    }
}

/// One configured endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub secret: Secret,
    pub events: Subscription,
}

/// Checks that `url` is an absolute `http`/`https` URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "'{url}': only http and https URLs can receive webhooks"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{url}' has no host"));
    }
    // The URL is shown to admins and logged; a password in it would be too.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{}: a user name or password in the URL would be shown and logged; the signature authenticates the sender",
            parsed.host_str().unwrap_or("the URL")
        ));
    }
    Ok(())
}

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delay before each retry; after the last, the message failed.
    pub retry_delays: Vec<Duration>,
    /// Consecutive failures after which an endpoint is disabled.
    pub disable_after: u32,
    /// How long one try may take.
    pub timeout: Duration,
}

impl Default for Delivery {
    /// The schedule the Standard Webhooks specification suggests.
    fn default() -> Self {
        let m = 60;
        let h = 3600;
        Delivery {
            retry_delays: [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            disable_after: 10,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Delivery {
    /// The wait before retry number `attempts` (1 after the first failure),
    /// `jitter` in [0, 1) spreading it ±20 %; `None` once the schedule is
    /// spent. A `Retry-After` the endpoint sent wins, up to a day.
    pub fn next_delay(
        &self,
        attempts: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let base = *self.retry_delays.get(attempts.checked_sub(1)? as usize)?;
        if let Some(r) = retry_after {
            return Some(r.min(Duration::from_secs(86_400)));
        }
        Some(base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
    }
}

/// What one try came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(u16),
    /// An HTTP status other than 2xx, with its `Retry-After`.
    Refused(u16, Option<Duration>),
    /// No HTTP answer: connection refused, timeout, TLS, a redirect …
    Unreachable(String),
}

/// `Retry-After` as seconds (an HTTP date is not followed: it needs the
/// receiver's clock to agree with ours).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An HTTP agent for webhooks: no redirects, `timeout` per try.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(timeout)
        .user_agent(concat!("smart-support/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One try: POSTs `body` to the endpoint, signed now. Blocking.
pub fn send(agent: &ureq::Agent, endpoint: &Endpoint, msg_id: &str, body: &str) -> Outcome {
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = sign(&endpoint.secret, msg_id, ts, body);
    let result = agent
        .post(&endpoint.url)
        .set("content-type", "application/json")
        .set("webhook-id", msg_id)
        .set("webhook-timestamp", &ts.to_string())
        .set("webhook-signature", &signature)
        .send_string(body);
    match result {
        Ok(r) if (200..300).contains(&r.status()) => Outcome::Delivered(r.status()),
        // A 3xx: redirects are not followed, and it is no delivery.
        Ok(r) => Outcome::Refused(r.status(), retry_after(r.header("retry-after"))),
        Err(ureq::Error::Status(code, r)) => {
            Outcome::Refused(code, retry_after(r.header("retry-after")))
        }
        Err(ureq::Error::Transport(t)) => Outcome::Unreachable(t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_specifications() {
        // The example in the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_urls_and_subscriptions_are_checked() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_not base64!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
        assert_eq!(
            format!(
                "{:?}",
                Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            ),
            "Ok(Secret(…))"
        );
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        let err = check_url("https://user:hunter2@hooks.example.com/x").expect_err("userinfo");
        assert!(
            !err.contains("hunter2") && err.contains("password"),
            "{err}"
        );
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "/hook",
            "http://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(Subscription::parse(&["*".into()]), Ok(Subscription::All));
        let only =
            Subscription::parse(&["ticket.created".into(), "sla.breached".into()]).expect("names");
        assert!(only.wants(EventType::SlaBreached) && !only.wants(EventType::TicketMessage));
        let err = Subscription::parse(&["ticket.deleted".into()]).expect_err("unknown");
        assert!(err.contains("ticket.deleted") && err.contains("ticket.assigned"));
        assert!(Subscription::parse(&[]).is_err());
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_and_retry_after() {
        let d = Delivery::default();
        assert_eq!(d.next_delay(0, 0.5, None), None);
        assert_eq!(d.next_delay(1, 0.5, None), Some(Duration::from_secs(5)));
        assert_eq!(d.next_delay(1, 0.0, None), Some(Duration::from_secs(4)));
        assert_eq!(
            d.next_delay(2, 0.999_999, None).map(|x| x.as_secs()),
            Some(359)
        );
        assert_eq!(
            d.next_delay(7, 0.5, None),
            Some(Duration::from_secs(36_000))
        );
        assert_eq!(d.next_delay(8, 0.5, None), None);
        let ra = Some(Duration::from_secs(120));
        assert_eq!(d.next_delay(1, 0.5, ra), Some(Duration::from_secs(120)));
        assert_eq!(
            d.next_delay(8, 0.5, ra),
            None,
            "Retry-After does not extend the schedule"
        );
        assert_eq!(retry_after(Some(" 30 ")), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
