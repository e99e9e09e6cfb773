//! The configuration file (`--config FILE`, `SMART_SUPPORT_CONFIG`): TOML,
//! for what flags cannot say (webhook endpoints, service levels, the mail
//! server). Read once at start and checked strictly: an unknown key, a bad
//! URL, secret, duration or event name is an error that names the file and
//! the key, and the service does not start. Flags and environment variables
//! keep their meaning; the file holds no flag's setting, so they never
//! disagree.
//!
//! ```toml
//! [[webhooks]]
//! url = "http://127.0.0.1:9000/hook"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
//! events = ["*"]
//!
//! [webhook_delivery]
//! retry_delays = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
//! disable_after = 10
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::notify::Webhooks;
use crate::notify::mail::MailSettings;
use crate::notify::webhook::{self, Delivery, Endpoint, Secret, Subscription};
use crate::sla::clock::Policy;
use crate::sla::report::Escalation;
use crate::sla::{Calendar, SlaConfig, Slot};
use crate::ticket::Priority;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    webhook_delivery: Option<RawDelivery>,
    #[serde(default)]
    sla: BTreeMap<String, RawSla>,
    business_hours: Option<RawBusinessHours>,
    sla_options: Option<RawSlaOptions>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    smtp: Option<RawSmtp>,
    /// Serve's flags; read by `config::ServeConfig::from_args_and_file`.
    #[serde(rename = "server")]
    _server: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlaOptions {
    /// The share of a target's time after which it is at risk.
    at_risk: Option<f64>,
    /// How often the clocks are looked at.
    check_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBusinessHours {
    timezone: String,
    #[serde(default)]
    monday: Vec<String>,
    #[serde(default)]
    tuesday: Vec<String>,
    #[serde(default)]
    wednesday: Vec<String>,
    #[serde(default)]
    thursday: Vec<String>,
    #[serde(default)]
    friday: Vec<String>,
    #[serde(default)]
    saturday: Vec<String>,
    #[serde(default)]
    sunday: Vec<String>,
    #[serde(default)]
    holidays: Vec<String>,
}

impl RawBusinessHours {
    fn check(&self) -> Result<Calendar, String> {
        let days = [
            ("monday", &self.monday),
            ("tuesday", &self.tuesday),
            ("wednesday", &self.wednesday),
            ("thursday", &self.thursday),
            ("friday", &self.friday),
            ("saturday", &self.saturday),
            ("sunday", &self.sunday),
        ];
        let mut week: [Vec<Slot>; 7] = Default::default();
        for (i, (name, slots)) in days.iter().enumerate() {
            week[i] = slots
                .iter()
                .map(|s| Slot::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("business_hours.{name}: {e}"))?;
        }
        let holidays = self
            .holidays
            .iter()
            .map(|d| {
                d.parse().map_err(|_| {
                    format!("business_hours.holidays: '{d}' is not a date like 2026-12-25")
                })
            })
            .collect::<Result<_, _>>()?;
        Calendar::new(&self.timezone, week, holidays).map_err(|e| format!("business_hours: {e}"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: String,
    #[serde(default = "all_events")]
    events: Vec<String>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    retry_delays: Option<Vec<String>>,
    disable_after: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSla {
    first_response: Option<String>,
    next_response: Option<String>,
    resolution: Option<String>,
    #[serde(default)]
    business_hours: bool,
    /// A `[groups]` name: a miss assigns the ticket to its least busy member.
    escalate_to: Option<String>,
    /// After a miss still unmet this long, the admins are mailed.
    second_level_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    from: String,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    starttls: bool,
    retry_delays: Option<Vec<String>>,
}

impl RawSmtp {
    fn check(&self) -> Result<MailSettings, String> {
        if self.host.trim().is_empty() {
            return Err("smtp.host: empty".into());
        }
        let from = self
            .from
            .parse()
            .map_err(|_| format!("smtp.from: '{}' is not an e-mail address", self.from))?;
        let credentials = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => return Err("smtp: username and password go together".into()),
        };
        let retry_delays = match &self.retry_delays {
            Some(list) => list
                .iter()
                .map(|s| parse_duration(s))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("smtp.retry_delays: {e}"))?,
            None => crate::notify::mail::default_retry_delays(),
        };
        Ok(MailSettings {
            host: self.host.trim().to_string(),
            port: self.port.unwrap_or(if self.starttls { 587 } else { 25 }),
            from,
            credentials,
            starttls: self.starttls,
            retry_delays,
        })
    }
}

/// The file, checked.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub webhooks: Webhooks,
    /// The mail server, when `[smtp]` is there.
    pub mail: Option<MailSettings>,
    /// The service levels (`[sla.*]` on `[business_hours]`).
    pub sla: Option<SlaConfig>,
}

/// The `[sla.*]` policies with their calendar and at-risk share.
fn sla_config(raw: &Raw, business_hours: Option<Calendar>) -> Result<Option<SlaConfig>, String> {
    let mut policies = std::collections::HashMap::new();
    let mut escalation = std::collections::HashMap::new();
    for (group, users) in &raw.groups {
        if users.is_empty() || users.iter().any(|u| u.trim().is_empty()) {
            return Err(format!("groups.{group}: a list of user names, none empty"));
        }
    }
    for (name, sla) in &raw.sla {
        let priority = name
            .parse::<Priority>()
            .map_err(|_| format!("sla.{name}: not a priority (Critical, High, Medium or Low)"))?;
        let target = |key: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("sla.{name}.{key}: {e}"))
        };
        if sla.business_hours && business_hours.is_none() {
            return Err(format!(
                "sla.{name}.business_hours: true needs a [business_hours] section"
            ));
        }
        let group = match &sla.escalate_to {
            Some(g) => raw
                .groups
                .get(g)
                .cloned()
                .ok_or_else(|| format!("sla.{name}.escalate_to: no group '{g}' in [groups]"))?,
            None => Vec::new(),
        };
        escalation.insert(
            priority,
            Escalation {
                group,
                second_level_after: target("second_level_after", &sla.second_level_after)?,
            },
        );
        policies.insert(
            priority,
            Policy {
                first_response: target("first_response", &sla.first_response)?,
                next_response: target("next_response", &sla.next_response)?,
                resolution: target("resolution", &sla.resolution)?,
                business_hours: sla.business_hours,
            },
        );
    }
    let at_risk = raw
        .sla_options
        .as_ref()
        .and_then(|o| o.at_risk)
        .unwrap_or(0.8);
    if !(0.0..=1.0).contains(&at_risk) || at_risk == 0.0 {
        return Err(format!(
            "sla_options.at_risk: a share above 0 and at most 1 (got {at_risk})"
        ));
    }
    let check_every = match raw
        .sla_options
        .as_ref()
        .and_then(|o| o.check_every.as_deref())
    {
        Some(s) => parse_duration(s).map_err(|e| format!("sla_options.check_every: {e}"))?,
        None => crate::sla::timer::DEFAULT_CHECK_EVERY,
    };
    if check_every.is_zero() {
        return Err("sla_options.check_every: at least 1s".into());
    }
    if policies.is_empty() {
        return Ok(None);
    }
    Ok(Some(SlaConfig {
        policies,
        calendar: business_hours.unwrap_or_else(Calendar::always),
        at_risk,
        check_every,
        escalation,
    }))
}

/// `"30s"`, `"15m"`, `"4h"`, `"2d"`: a whole number and one unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{s}' has no unit (s, m, h or d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like \"15m\", \"4h\" or \"2d\""))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{s}': the unit is s, m, h or d (like \"15m\", \"4h\", \"2d\")"
            ));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too long"))
}

/// The file's `[server]` table (serve's flags; empty without one), read
/// for `ServeConfig::from_args_and_file` before the rest is checked.
pub fn server_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    let mut all: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))?;
    match all.remove("server") {
        Some(toml::Value::Table(t)) => Ok(t),
        Some(_) => Err(format!("{}: server: a table, [server]", path.display())),
        None => Ok(toml::Table::new()),
    }
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
        ConfigFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks the text of a configuration file.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut endpoints = Vec::new();
        for (i, w) in raw.webhooks.iter().enumerate() {
            let at = |key: &str, e: String| format!("webhooks[{i}].{key}: {e}");
            webhook::check_url(&w.url).map_err(|e| at("url", e))?;
            if endpoints.iter().any(|e: &Endpoint| e.url == w.url) {
                return Err(at("url", format!("'{}' is listed twice", w.url)));
            }
            endpoints.push(Endpoint {
                url: w.url.clone(),
                secret: Secret::parse(&w.secret).map_err(|e| at("secret", e))?,
                events: Subscription::parse(&w.events).map_err(|e| at("events", e))?,
            });
        }
        let mut delivery = Delivery::default();
        if let Some(d) = &raw.webhook_delivery {
            if let Some(delays) = &d.retry_delays {
                delivery.retry_delays = delays
                    .iter()
                    .map(|s| parse_duration(s))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("webhook_delivery.retry_delays: {e}"))?;
            }
            if let Some(n) = d.disable_after {
                delivery.disable_after = n;
            }
        }
        let business_hours = raw
            .business_hours
            .as_ref()
            .map(RawBusinessHours::check)
            .transpose()?;
        let sla = sla_config(&raw, business_hours.clone())?;
        let mail = raw.smtp.as_ref().map(RawSmtp::check).transpose()?;
        Ok(ConfigFile {
            sla,
            mail,
            webhooks: Webhooks {
                endpoints,
                delivery,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[sla.Critical]
first_response = "1m"
resolution = "4h"
business_hours = false

[[webhooks]]
url = "http://127.0.0.1:9000/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["*"]

[smtp]
host = "127.0.0.1"
port = 2525
from = "support@example.test"
"#;

    #[test]
    fn the_documented_example_is_read() {
        let c = ConfigFile::parse(ISSUE_EXAMPLE).expect("valid");
        assert_eq!(c.webhooks.endpoints.len(), 1);
        assert_eq!(c.webhooks.endpoints[0].url, "http://127.0.0.1:9000/hook");
        assert_eq!(c.webhooks.endpoints[0].events, Subscription::All);
        let sla = c.sla.as_ref().expect("sla");
        let critical = &sla.policies[&Priority::Critical];
        assert_eq!(critical.first_response, Some(Duration::from_secs(60)));
        assert_eq!(critical.resolution, Some(Duration::from_secs(14_400)));
        assert!(!critical.business_hours && critical.next_response.is_none());
        assert_eq!(sla.at_risk, 0.8);
        let mail = c.mail.expect("smtp");
        assert_eq!(
            (mail.host.as_str(), mail.port, mail.starttls),
            ("127.0.0.1", 2525, false)
        );
        assert_eq!(mail.from.email.to_string(), "support@example.test");
        assert!(
            ConfigFile::parse("")
                .expect("empty")
                .webhooks
                .endpoints
                .is_empty()
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let err = |text: &str| ConfigFile::parse(text).expect_err("refused");
        let e = err(
            "[[webhooks]]\nurl = \"http://a/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevnts = [\"*\"]\n",
        );
        assert!(e.contains("evnts"), "{e}");
        let e = err(
            "[[webhooks]]\nurl = \"ftp://a/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        );
        assert!(e.contains("webhooks[0].url") && e.contains("http"), "{e}");
        let e = err("[[webhooks]]\nurl = \"http://a/\"\nsecret = \"hunter2\"\n");
        assert!(
            e.contains("webhooks[0].secret") && !e.contains("hunter2"),
            "{e}"
        );
        let e = err(
            "[[webhooks]]\nurl = \"http://a/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"ticket.eaten\"]\n",
        );
        assert!(
            e.contains("webhooks[0].events") && e.contains("ticket.eaten"),
            "{e}"
        );
        let e = err("[sla.Urgent]\nresolution = \"4h\"\n");
        assert!(e.contains("sla.Urgent"), "{e}");
        let e = err("[sla.High]\nresolution = \"4 hours\"\n");
        assert!(e.contains("sla.High.resolution"), "{e}");
        let e = err("[webhook_delivery]\nretry_delays = [\"5s\", \"soon\"]\n");
        assert!(
            e.contains("webhook_delivery.retry_delays") && e.contains("soon"),
            "{e}"
        );
        let e = err("[sla.High]\nresolution = \"4h\"\nbusiness_hours = true\n");
        assert!(e.contains("sla.High.business_hours"), "{e}");
        let e = err("[business_hours]\ntimezone = \"Europe/Berlin\"\nmonday = [\"9-5\"]\n");
        assert!(e.contains("business_hours.monday"), "{e}");
        let e = err("[business_hours]\ntimezone = \"Berlin\"\nmonday = [\"09:00-17:00\"]\n");
        assert!(e.contains("IANA"), "{e}");
        let e = err(
            "[business_hours]\ntimezone = \"UTC\"\nmonday = [\"09:00-17:00\"]\nholidays = [\"25.12.2026\"]\n",
        );
        assert!(e.contains("business_hours.holidays"), "{e}");
        let e = err("[business_hours]\ntimezone = \"UTC\"\nmondays = [\"09:00-17:00\"]\n");
        assert!(e.contains("mondays"), "{e}");
        let ok = ConfigFile::parse(
            "[business_hours]\ntimezone = \"Europe/Berlin\"\nmonday = [\"09:00-12:00\", \"13:00-17:00\"]\n\
             holidays = [\"2026-12-25\"]\n[sla.High]\nresolution = \"8h\"\nbusiness_hours = true\n",
        )
        .expect("valid");
        assert!(ok.sla.expect("sla").policies[&Priority::High].business_hours);
        let e = err("[sla_options]\nat_risk = 1.5\n");
        assert!(e.contains("sla_options.at_risk"), "{e}");
        let e = err("colour = \"blue\"\n");
        assert!(e.contains("colour"), "{e}");
        let e = err("[smtp]\nhost = \"h\"\nfrom = \"nobody\"\n");
        assert!(e.contains("smtp.from"), "{e}");
        let e = err("[smtp]\nhost = \"h\"\nfrom = \"a@b.test\"\nusername = \"u\"\n");
        assert!(e.contains("username and password"), "{e}");
        let e = err("[smtp]\nhost = \"h\"\nfrom = \"a@b.test\"\nstarttls = \"yes\"\n");
        assert!(e.contains("starttls"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "m", "15", "1.5h", "15 m", "3w", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
