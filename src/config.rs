//! Service configuration: command-line flags with `SMART_SUPPORT_*`
//! environment fallbacks, and the defaults a fresh install runs with.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};

use crate::guard::Cidr;
use crate::inference::batching;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Configuration file (TOML): webhooks and what else flags cannot say.
    #[arg(long = "config", env = "SMART_SUPPORT_CONFIG")]
    pub config_file: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "SMART_SUPPORT_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,

    /// SQLite database file (created, with its directory, on first start).
    #[arg(long, env = "SMART_SUPPORT_DB", default_value = "data/tickets.db")]
    pub db: PathBuf,

    /// Longest accepted subject, in characters.
    #[arg(long, env = "SMART_SUPPORT_MAX_SUBJECT", default_value_t = 200)]
    pub max_subject_chars: usize,

    /// Longest accepted description, in characters.
    #[arg(long, env = "SMART_SUPPORT_MAX_DESCRIPTION", default_value_t = 10_000)]
    pub max_description_chars: usize,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SMART_SUPPORT_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Longest `?wait=true` on ticket intake, in seconds.
    #[arg(long, env = "SMART_SUPPORT_WAIT_SECS", default_value_t = 10)]
    pub wait_secs: u64,

    /// Tickets processed at the same time.
    #[arg(long, env = "SMART_SUPPORT_WORKERS", default_value_t = 2)]
    pub workers: usize,

    /// Admin API bearer token (`Authorization: Bearer …`); unset disables bearer auth.
    #[arg(long, env = "SMART_SUPPORT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Sets (and replaces) the admin password at start-up, for automation.
    #[arg(long, env = "SMART_SUPPORT_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Mark cookies `Secure` (set this when serving behind HTTPS).
    #[arg(long, env = "SMART_SUPPORT_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,

    /// Directory whose templates replace the embedded ones, file by file.
    #[arg(long, env = "SMART_SUPPORT_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,

    /// Directory whose CSS/JS files replace the embedded ones, file by file.
    #[arg(long, env = "SMART_SUPPORT_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,

    /// Public base URL used in tracking links (defaults to http://BIND).
    #[arg(long, env = "SMART_SUPPORT_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Reverse proxies (CIDR blocks, comma-separated) whose `X-Forwarded-For`
    /// names the client; without this the header is ignored.
    #[arg(long, env = "SMART_SUPPORT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,

    #[command(flatten)]
    pub limits: Limits,

    /// Whether customers see the AI's answer at once (`show`) or only what
    /// staff send them (`draft`: the answer waits on the staff ticket page).
    #[arg(long, env = "SMART_SUPPORT_AI_ANSWERS", value_enum, default_value_t = AiAnswers::Show)]
    pub ai_answers: AiAnswers,

    /// Assign new tickets to active agents in turn (round-robin by name).
    #[arg(long, env = "SMART_SUPPORT_AUTO_ASSIGN", default_value_t = false)]
    pub auto_assign: bool,

    /// Days after which a customer's reply no longer reopens a resolved
    /// ticket (they are asked to open a new one).
    #[arg(long, env = "SMART_SUPPORT_REOPEN_DAYS", default_value_t = 14)]
    pub reopen_days: u32,

    /// Seconds a shutdown (SIGTERM/SIGINT) waits for running tickets before
    /// exiting; unfinished ones stay queued for the next start.
    #[arg(long, env = "SMART_SUPPORT_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// What this process does: `all` (one process does everything; it owns
    /// its SQLite file alone), `web` (pages and API, no models) or `worker`
    /// (models, the queue and the background jobs; serves /health and
    /// /metrics only). Web and worker processes share one database.
    #[arg(long, env = "SMART_SUPPORT_ROLE", value_enum, default_value_t = crate::cluster::Role::All)]
    pub role: crate::cluster::Role,

    /// Seconds a worker holds a ticket without renewing its lease (renewed
    /// every third of it); a ticket whose lease expired is claimed again.
    #[arg(long, env = "SMART_SUPPORT_LEASE_SECS", default_value_t = 60)]
    pub lease_secs: u64,

    /// Claims of a ticket after which the models are not run again: the
    /// rules answer and staff see why (a ticket that kills the process is
    /// never retried forever).
    #[arg(long, env = "SMART_SUPPORT_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,

    /// Read-only database connections beside the single writer (0: reads
    /// share the writer's connection).
    #[arg(long, env = "SMART_SUPPORT_DB_READERS", default_value_t = 4)]
    pub db_readers: usize,

    /// Largest size of the database in MiB; past it writes answer 503 as on a
    /// full disk (unset: no limit but the disk's).
    #[arg(long, env = "SMART_SUPPORT_DB_MAX_MB")]
    pub db_max_mb: Option<u64>,

    /// Delete or anonymise tickets resolved more than this many days ago
    /// (unset: keep everything).
    #[arg(long, env = "SMART_SUPPORT_RETENTION_DAYS")]
    pub retention_days: Option<u32>,

    /// What retention does to old resolved tickets.
    #[arg(long, env = "SMART_SUPPORT_RETENTION_MODE", value_enum, default_value_t = RetentionMode::Anonymise)]
    pub retention_mode: RetentionMode,

    #[command(flatten)]
    pub models: ModelArgs,
}

/// Who sees the AI's answer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AiAnswers {
    /// The customer sees it on the tracker as soon as it is ready.
    Show,
    /// Staff review it first: it is a draft on the staff ticket page.
    Draft,
}

/// What happens to a ticket past the retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetentionMode {
    /// The ticket, its events and rating are deleted.
    Delete,
    /// The customer's words (subject, description, rating comment, the AI's
    /// answer) are removed; category, priority, dates and stars stay for the
    /// charts.
    Anonymise,
}

/// Request, connection and login limits (0 turns a per-minute limit off).
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Password checks running at once (argon2 holds ~19 MiB each).
    #[arg(long, env = "SMART_SUPPORT_LOGIN_CONCURRENCY", default_value_t = 2)]
    pub login_concurrency: usize,

    /// Password or token guesses admitted per minute over all addresses.
    #[arg(
        long,
        env = "SMART_SUPPORT_LOGIN_GUESSES_PER_MINUTE",
        default_value_t = 30
    )]
    pub login_guesses_per_minute: u32,

    /// Tickets one client address may submit per minute (bursts of the same size).
    #[arg(long, env = "SMART_SUPPORT_INTAKE_PER_ADDRESS", default_value_t = 10)]
    pub intake_per_address: u32,

    /// Tickets accepted per minute from everyone together.
    #[arg(long, env = "SMART_SUPPORT_INTAKE_PER_MINUTE", default_value_t = 600)]
    pub intake_per_minute: u32,

    /// Other customer writes (ratings, resolve) per minute per address.
    #[arg(long, env = "SMART_SUPPORT_WRITES_PER_ADDRESS", default_value_t = 30)]
    pub writes_per_address: u32,

    /// Seconds a connection may take to send a complete request head; an idle
    /// keep-alive connection is closed after the same time.
    #[arg(long, env = "SMART_SUPPORT_HEADER_TIMEOUT_SECS", default_value_t = 15)]
    pub header_timeout_secs: u64,

    /// Seconds a request body may take to arrive.
    #[arg(long, env = "SMART_SUPPORT_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Open connections; past it new ones get 503 and are closed.
    #[arg(long, env = "SMART_SUPPORT_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,

    /// Open live event streams (trackers and dashboards together).
    #[arg(long, env = "SMART_SUPPORT_MAX_STREAMS", default_value_t = 500)]
    pub max_streams: usize,

    /// Open live event streams on one ticket.
    #[arg(
        long,
        env = "SMART_SUPPORT_MAX_STREAMS_PER_TICKET",
        default_value_t = 8
    )]
    pub max_streams_per_ticket: usize,
}

/// Which models to load and how; shared by `serve`, `triage` and `classify`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Zero-shot NLI model: a directory, a Hugging Face repo id (resolved offline
    /// from models/ and the HF cache), `auto` (facebook/bart-large-mnli when
    /// present) or `none` (keyword rules).
    #[arg(long, env = "SMART_SUPPORT_NLI_MODEL", default_value = "auto")]
    pub nli_model: String,

    /// Device for models: auto, cpu, cuda, cuda:N or metal (GPUs need the
    /// `cuda`/`metal` cargo features).
    #[arg(long, env = "SMART_SUPPORT_DEVICE", default_value = "auto")]
    pub device: String,

    /// Floating-point type of the NLI model: f32, bf16 or f16.
    #[arg(long, env = "SMART_SUPPORT_NLI_DTYPE", default_value = "f32")]
    pub nli_dtype: String,

    /// Quantize the NLI model's linear layers at load: none, q8_0, q4_0, q4k, q6k.
    #[arg(long, env = "SMART_SUPPORT_NLI_QUANT", default_value = "none")]
    pub nli_quant: String,

    /// Most label pairs in one batch.
    #[arg(long, env = "SMART_SUPPORT_MAX_BATCH_PAIRS", default_value_t = 56)]
    pub max_batch_pairs: usize,

    /// Most padded tokens in one forward pass.
    #[arg(long, env = "SMART_SUPPORT_MAX_BATCH_TOKENS", default_value_t = 8192)]
    pub max_batch_tokens: usize,

    /// How long the batcher waits for more requests after the first, in ms.
    #[arg(long, env = "SMART_SUPPORT_MAX_WAIT_MS", default_value_t = 5)]
    pub max_wait_ms: u64,

    /// Requests the model queue holds before the classify API answers 503.
    #[arg(long, env = "SMART_SUPPORT_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,

    /// Text-generation model for the troubleshooter: a .gguf file, a directory
    /// holding one, ORG/NAME/FILE.gguf (resolved offline from models/ and the
    /// HF cache), `auto` (SmolLM2-135M-Instruct when present) or `none`
    /// (category playbooks).
    #[arg(long, env = "SMART_SUPPORT_GEN_MODEL", default_value = "auto")]
    pub gen_model: String,

    /// Most tokens the generator writes per answer.
    #[arg(long, env = "SMART_SUPPORT_GEN_MAX_NEW_TOKENS", default_value_t = 200)]
    pub gen_max_new_tokens: usize,

    /// Sampling temperature; 0 is greedy (reproducible).
    #[arg(long, env = "SMART_SUPPORT_GEN_TEMPERATURE", default_value_t = 0.0)]
    pub gen_temperature: f64,

    /// Nucleus sampling: keep the smallest token set with this much probability.
    #[arg(long, env = "SMART_SUPPORT_GEN_TOP_P")]
    pub gen_top_p: Option<f64>,

    /// Random seed for sampling.
    #[arg(long, env = "SMART_SUPPORT_GEN_SEED", default_value_t = 42)]
    pub gen_seed: u64,

    /// Penalty for repeating recent tokens (1 = none).
    #[arg(long, env = "SMART_SUPPORT_GEN_REPEAT_PENALTY", default_value_t = 1.1)]
    pub gen_repeat_penalty: f32,

    /// Requests the generator queue holds.
    #[arg(long, env = "SMART_SUPPORT_GEN_QUEUE_CAPACITY", default_value_t = batching::DEFAULT_QUEUE_CAPACITY)]
    pub gen_queue_capacity: usize,

    /// Answers the generator writes together (continuous batching); ticket
    /// processing runs at least this many tickets at once when a generator
    /// is loaded.
    #[arg(long, env = "SMART_SUPPORT_GEN_MAX_SEQUENCES", default_value_t = batching::DEFAULT_MAX_SEQUENCES)]
    pub gen_max_sequences: usize,

    /// Memory for the answers' key/value caches, MiB; an answer waits when
    /// the ones in flight could fill it (one always runs).
    #[arg(long, env = "SMART_SUPPORT_GEN_KV_BUDGET_MB", default_value_t = batching::DEFAULT_KV_BUDGET_MB)]
    pub gen_kv_budget_mb: usize,

    /// How the generator's key/value cache stores its rows on the CPU: f16
    /// (the default: half the memory, faster batches) or f32 (candle's
    /// numbers).
    #[arg(long, env = "SMART_SUPPORT_GEN_KV_CACHE")]
    pub gen_kv_cache: Option<String>,

    /// Directory searched for models by repo id (models/ORG/NAME).
    #[arg(long, env = "SMART_SUPPORT_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

impl ModelArgs {
    /// The generator worker's limits from the `--gen-*` flags.
    pub fn batch_config(&self) -> batching::BatchConfig {
        batching::BatchConfig {
            capacity: self.gen_queue_capacity,
            max_sequences: self.gen_max_sequences,
            kv_budget_bytes: self.gen_kv_budget_mb.saturating_mul(1 << 20),
        }
    }

    /// Sampling settings from the `--gen-*` flags.
    pub fn generation_params(&self) -> crate::inference::generator::GenerationParams {
        crate::inference::generator::GenerationParams {
            max_new_tokens: self.gen_max_new_tokens.max(1),
            temperature: self.gen_temperature,
            top_p: self.gen_top_p,
            seed: self.gen_seed,
            repeat_penalty: self.gen_repeat_penalty,
            ..Default::default()
        }
    }

    /// No models: keyword rules only (what tests use unless they load one);
    /// every other value is the flags' default.
    pub fn rules_only() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            models: ModelArgs,
        }
        let mut m = Only::parse_from(["smart-support"]).models;
        m.nli_model = "none".into();
        m.gen_model = "none".into();
        m.device = "cpu".into();
        m
    }
}

/// `serve`'s flags alone, as a command of their own.
#[derive(Parser)]
#[command(name = "smart-support serve")]
struct ServeOnly {
    #[command(flatten)]
    cfg: ServeConfig,
}

impl ServeConfig {
    /// Serve's settings from `args` (the words after `serve`), the
    /// environment, and the configuration file's `[server]` table, in that
    /// order of precedence: a key of `[server]` is a flag's long name with
    /// `_` for `-` (`bind`, `db`, `workers`, `gen_model` …) and counts only
    /// when neither the command line nor the environment sets that flag.
    /// A key that is no flag, or a bad value, is an error naming the file
    /// and the key.
    pub fn from_args_and_file<I, T>(args: I) -> Result<ServeConfig, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let mut argv: Vec<std::ffi::OsString> = vec!["smart-support serve".into()];
        argv.extend(args.into_iter().map(Into::into));
        let command = ServeOnly::command();
        let matches = command
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| e.to_string())?;
        let cfg = ServeOnly::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .cfg;
        let Some(path) = cfg.config_file.clone() else {
            return Ok(cfg);
        };
        let at = |key: &str, e: String| format!("{}: server.{key}: {e}", path.display());
        let table = crate::config_file::server_table(&path)?;
        let mut extra = Vec::new();
        for (key, value) in &table {
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
                .ok_or_else(|| {
                    at(
                        key,
                        "not a flag of serve (see `smart-support serve --help`)".into(),
                    )
                })?;
            let set_here = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            let words = flag_words(arg, &long, value).map_err(|e| at(key, e))?;
            // Each value checked alone, so that an error names its key.
            command
                .clone()
                .try_get_matches_from(
                    std::iter::once("smart-support serve".to_string()).chain(words.clone()),
                )
                .map_err(|e| at(key, clap_message(&e)))?;
            if !set_here {
                extra.extend(words.into_iter().map(std::ffi::OsString::from));
            }
        }
        argv.extend(extra);
        let matches = command
            .try_get_matches_from(&argv)
            .map_err(|e| format!("{}: [server]: {}", path.display(), clap_message(&e)))?;
        ServeOnly::from_arg_matches(&matches)
            .map(|o| o.cfg)
            .map_err(|e| e.to_string())
    }

    /// The defaults, as `serve` with no flags would use (the clap attributes
    /// are the one source of every default), on the given database and
    /// without models.
    pub fn defaults(db: PathBuf) -> Self {
        let mut cfg = ServeOnly::parse_from(["smart-support"]).cfg;
        cfg.db = db;
        cfg.models = ModelArgs::rules_only();
        cfg
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_string()
    }
}

/// The command-line words that say `value` for the flag `--long`.
fn flag_words(arg: &clap::Arg, long: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value as V;
    let scalar = |v: &V| match v {
        V::String(s) => Ok(s.clone()),
        V::Integer(n) => Ok(n.to_string()),
        V::Float(f) => Ok(f.to_string()),
        V::Boolean(b) => Ok(b.to_string()),
        _ => Err("a string, a number or true/false".to_string()),
    };
    let flag = format!("--{long}");
    match value {
        V::Boolean(on) if matches!(arg.get_action(), clap::ArgAction::SetTrue) => {
            Ok(if *on { vec![flag] } else { Vec::new() })
        }
        V::Array(items) => match arg.get_value_delimiter() {
            Some(sep) => Ok(vec![format!(
                "{flag}={}",
                items
                    .iter()
                    .map(scalar)
                    .collect::<Result<Vec<_>, _>>()?
                    .join(&sep.to_string())
            )]),
            None => Err("one value, not a list".into()),
        },
        v => Ok(vec![format!("{flag}={}", scalar(v)?)]),
    }
}

/// A clap error's first line, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text).expect("write");
        let p = path.display().to_string();
        (dir, p)
    }

    #[test]
    fn the_file_sets_flags_that_the_command_line_leaves_unset() {
        let (_d, path) = file(
            "[server]\nworkers = 5\ndb = \"/srv/t.db\"\nsecure_cookies = true\n\
             trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1/32\"]\nai_answers = \"draft\"\n\
             gen_model = \"none\"\nmax_streams = 7\n",
        );
        let cfg =
            ServeConfig::from_args_and_file(["--config", &path, "--workers", "3"]).expect("valid");
        assert_eq!(cfg.workers, 3, "the command line wins");
        assert_eq!(cfg.db, PathBuf::from("/srv/t.db"));
        assert!(cfg.secure_cookies);
        assert_eq!(cfg.trusted_proxies.len(), 2);
        assert_eq!(cfg.ai_answers, AiAnswers::Draft);
        assert_eq!(cfg.models.gen_model, "none");
        assert_eq!(cfg.limits.max_streams, 7);
        let plain = ServeConfig::from_args_and_file(["--workers", "3"]).expect("valid");
        assert_eq!(plain.db, PathBuf::from("data/tickets.db"));
    }

    #[test]
    fn a_bad_server_key_or_value_names_the_file_and_key() {
        let err = |text: &str| {
            let (_d, path) = file(text);
            let e = ServeConfig::from_args_and_file(["--config", &path]).expect_err("refused");
            assert!(e.contains(&path), "{e}");
            e
        };
        let e = err("[server]\nworkres = 2\n");
        assert!(
            e.contains("server.workres") && e.contains("not a flag"),
            "{e}"
        );
        let e = err("[server]\nworkers = \"many\"\n");
        assert!(e.contains("server.workers") && e.contains("many"), "{e}");
        let e = err("[server]\nai_answers = \"sometimes\"\n");
        assert!(e.contains("server.ai_answers"), "{e}");
        let e = err("[server]\nconfig = \"other.toml\"\n");
        assert!(e.contains("server.config"), "{e}");
        let e = err("[server]\nbind = [\"a\", \"b\"]\n");
        assert!(e.contains("server.bind") && e.contains("not a list"), "{e}");
        let e = err("[server]\nlimits = { a = 1 }\n");
        assert!(e.contains("server.limits"), "{e}");
    }
}
