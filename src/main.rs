//! The `smart-support` command line: `serve` (default), `triage`, `classify`,
//! `generate`, `models fetch`, `backup`, `users`, `admin set-password`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use smart_support::config::{ModelArgs, ServeConfig};
use smart_support::store::Store;
use smart_support::ticket::{Role, TicketInput};
use smart_support::web::auth;

#[derive(Parser)]
#[command(
    name = "smart-support",
    version,
    about = "Self-hosted customer-support triage"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web service (the default command).
    Serve(Box<ServeConfig>),
    /// Run the pipeline on one ticket and print its JSON (no database).
    Triage {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        description: String,
        /// A folder of Markdown articles to retrieve from (default: the
        /// embedded starter knowledge base).
        #[arg(long)]
        kb: Option<PathBuf>,
        #[command(flatten)]
        models: ModelArgs,
    },
    /// Run the pipeline over a labelled set (JSON lines) and print the
    /// figures as one JSON object.
    Eval {
        /// Lines of {"subject", "description", "category", "articles": [slugs]}.
        #[arg(long)]
        set: PathBuf,
        /// A folder of Markdown articles (default: the starter knowledge base).
        #[arg(long)]
        kb: Option<PathBuf>,
        /// Only every N-th ticket of the set (1: all).
        #[arg(long, default_value_t = 1)]
        every: usize,
        /// A JSON object of minimums (`max_*`: maximums); exit 1 when a
        /// figure misses one.
        #[arg(long)]
        floors: Option<PathBuf>,
        /// Write one JSON line per ticket here.
        #[arg(long)]
        details: Option<PathBuf>,
        #[command(flatten)]
        models: ModelArgs,
    },
    /// The knowledge base: import or export a folder of Markdown files.
    Kb {
        #[command(flatten)]
        db: DbArg,
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Zero-shot classify texts; prints one JSON line per text, like transformers' pipeline.
    Classify {
        /// Candidate labels, comma-separated (default: the seven ticket categories).
        #[arg(long)]
        labels: Option<String>,
        /// Score each label independently (entailment vs contradiction).
        #[arg(long)]
        multi_label: bool,
        /// Hypothesis template; {} is replaced by the label.
        #[arg(long, default_value = smart_support::inference::nli::DEFAULT_TEMPLATE)]
        template: String,
        /// Texts to classify.
        #[arg(required = true)]
        texts: Vec<String>,
        #[command(flatten)]
        models: ModelArgs,
    },
    /// Greedy completion of a raw prompt (no chat template) with a GGUF model;
    /// prints the completion, and prefill/decode speed on stderr.
    Generate {
        /// The .gguf file (or a directory holding one, or ORG/NAME/FILE.gguf).
        #[arg(long, env = "SMART_SUPPORT_GEN_MODEL")]
        gen_model: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// Sampling temperature (0 = greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Nucleus sampling probability mass.
        #[arg(long)]
        top_p: Option<f64>,
        /// Random seed for sampling.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Repetition penalty (1 = none, the default for raw completions).
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        /// Stop strings, comma-separated.
        #[arg(long, value_delimiter = ',')]
        stop: Vec<String>,
        /// Generate exactly --max-new-tokens tokens, past end-of-text (benchmarks).
        #[arg(long)]
        ignore_eos: bool,
        /// Device: auto, cpu, cuda, cuda:N or metal.
        #[arg(long, env = "SMART_SUPPORT_DEVICE", default_value = "auto")]
        device: String,
        /// How the key/value cache stores its rows on the CPU: f16 (the
        /// default) or f32 (candle's numbers).
        #[arg(long, env = "SMART_SUPPORT_GEN_KV_CACHE")]
        kv_cache: Option<String>,
        /// Directory searched for models by repo id.
        #[arg(long, env = "SMART_SUPPORT_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
        /// The prompt.
        #[arg(required = true)]
        prompt: String,
    },
    /// Model files: download into the Hugging Face cache (connected machines).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// A consistent, verified copy of a live database (safe while serving).
    Backup {
        /// The database to copy.
        #[arg(long, env = "SMART_SUPPORT_DB", default_value = "data/tickets.db")]
        db: PathBuf,
        /// The new file (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// The database as a whole: copy it into another (SQLite or PostgreSQL).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Staff accounts: add, list, disable, set a password.
    Users {
        #[command(flatten)]
        db: DbArg,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Admin account management.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Print one JSON object per model found locally (GGUF files and
    /// zero-shot folders under --models-dir, the test-model cache and the
    /// HF cache): path, architecture, whether it is supported, parameters,
    /// quantization, context, chat template.
    List {
        /// Directory searched for models.
        #[arg(long, env = "SMART_SUPPORT_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
    },
    /// Download the zero-shot model (facebook/bart-large-mnli) and the text
    /// generator (SmolLM2-135M-Instruct GGUF) into the HF cache.
    Fetch {
        /// Hugging Face repo id of the NLI model (`none` to skip).
        #[arg(long, default_value = smart_support::inference::hub::DEFAULT_NLI_REPO)]
        nli: String,
        /// ORG/NAME/FILE.gguf of the text generator (`none` to skip).
        #[arg(long, default_value_t = format!("{}/{}", smart_support::inference::hub::DEFAULT_GEN_REPO, smart_support::inference::hub::DEFAULT_GEN_FILE))]
        gen_model: String,
    },
}

/// The database a management command works on (for every subcommand).
#[derive(clap::Args)]
struct DbArg {
    /// SQLite database file.
    #[arg(
        long = "db",
        env = "SMART_SUPPORT_DB",
        default_value = "data/tickets.db",
        global = true
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum KbCommand {
    /// Create or update articles from DIR/*.md (all or nothing; articles
    /// not in DIR stay unless --replace).
    Import {
        dir: PathBuf,
        /// Delete the articles that are not in DIR (e.g. the starter set).
        #[arg(long)]
        replace: bool,
    },
    /// Write every article to DIR/{slug}.md.
    Export { dir: PathBuf },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Copies everything (tickets, events, accounts, articles, settings,
    /// outboxes) into a new, empty database and checks every table's count.
    /// Stop the service first: the copy reads one snapshot, and what is
    /// written after it stays behind.
    Copy {
        /// The database to copy: a SQLite file or a postgres:// URL.
        #[arg(long)]
        from: PathBuf,
        /// The destination: a new SQLite file or an empty PostgreSQL database.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user (password from SMART_SUPPORT_USER_PASSWORD, a prompt, or one line on stdin).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Role,
    },
    /// List users: name, role, active or disabled, created.
    List,
    /// Disable a user: they can no longer sign in, and their sessions end.
    Disable { name: String },
    /// Set a user's password (SMART_SUPPORT_USER_PASSWORD, a prompt, or one line on stdin).
    SetPassword { name: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Set the password of the user `admin`, creating it as an admin when
    /// missing (from SMART_SUPPORT_ADMIN_PASSWORD, a prompt, or one line on stdin).
    SetPassword {
        /// SQLite database file.
        #[arg(long, env = "SMART_SUPPORT_DB", default_value = "data/tickets.db")]
        db: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        // `Cli` has no options of its own, so serve's words follow the
        // subcommand (or there are none); they are read again with the
        // configuration file's `[server]` table under them.
        None => serve(serve_config(1)?),
        Some(Command::Serve(_)) => serve(serve_config(2)?),
        Some(Command::Triage {
            subject,
            description,
            kb,
            models,
        }) => {
            let input = TicketInput {
                subject,
                description,
            };
            let mut loaded = smart_support::models::load(&models);
            for note in &loaded.notes {
                tracing::warn!("{note}");
            }
            smart_support::kb::standalone(&mut loaded.pipeline, kb.as_deref())?;
            let v = smart_support::triage::triage(&loaded.pipeline, &input);
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Some(Command::Eval {
            set,
            kb,
            every,
            floors,
            details,
            models,
        }) => eval(
            &set,
            kb.as_deref(),
            every,
            floors.as_deref(),
            details.as_deref(),
            &models,
        ),
        Some(Command::Kb { db, command }) => kb(db.path, command),
        Some(Command::Classify {
            labels,
            multi_label,
            template,
            texts,
            models,
        }) => classify(labels, multi_label, &template, &texts, &models),
        Some(Command::Models {
            command: ModelsCommand::List { models_dir },
        }) => {
            use smart_support::inference::{facts, hub};
            let mut dirs = vec![models_dir];
            dirs.extend(hub::test_models_dir());
            dirs.push(hub::hf_cache().path().clone());
            let mut out = std::io::stdout().lock();
            for f in facts::find(&dirs) {
                writeln!(out, "{}", serde_json::to_string(&f)?)?;
            }
            Ok(())
        }
        Some(Command::Models {
            command: ModelsCommand::Fetch { nli, gen_model },
        }) => {
            use smart_support::inference::hub;
            if nli != "none" {
                let dir = hub::fetch(&nli, hub::NLI_FILES, &["config.json"])?;
                eprintln!("{nli} is in {}", dir.display());
            }
            if gen_model != "none" {
                let file = hub::fetch_gguf(&gen_model)?;
                eprintln!("{gen_model} is {}", file.display());
            }
            Ok(())
        }
        Some(Command::Generate {
            gen_model,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            repeat_penalty,
            stop,
            ignore_eos,
            device,
            kv_cache,
            models_dir,
            prompt,
        }) => {
            use smart_support::inference::{self, generator, hub};
            let Some(path) = hub::resolve_gguf(&gen_model, &models_dir)? else {
                bail!("no text-generation model: pass --gen-model FILE.gguf");
            };
            let t0 = std::time::Instant::now();
            let kv_type = inference::parse_kv_type(kv_cache.as_deref())?;
            let mut model =
                generator::GgufGenerator::load(&path, &inference::parse_device(&device)?)?;
            model.set_kv_type(kv_type);
            let loaded = t0.elapsed().as_secs_f64();
            let params = generator::GenerationParams {
                max_new_tokens: max_new_tokens.max(1),
                temperature,
                top_p,
                seed,
                repeat_penalty,
                stop,
                ignore_eos,
                ..Default::default()
            };
            let g = model.complete(&prompt, &params)?;
            println!("{}", g.text);
            eprintln!(
                "prompt {} tokens, prefill {:.1} tokens/s; generated {} tokens, decode {:.1} tokens/s; \
                 time to first token {:.0} ms; model loaded in {loaded:.2} s; stop: {:?}",
                g.prompt_tokens,
                g.prefill_tokens_per_sec(),
                g.generated_tokens,
                g.decode_tokens_per_sec(),
                g.ttft_secs * 1e3,
                g.stop
            );
            Ok(())
        }
        Some(Command::Admin {
            command: AdminCommand::SetPassword { db },
        }) => set_password(db),
        Some(Command::Backup { db, to }) => backup(db, to),
        Some(Command::Db {
            command: DbCommand::Copy { from, to },
        }) => db_copy(&from, &to),
        Some(Command::Users { db, command }) => users(db.path, command),
    }
}

/// Serve's settings from the command line after its first `skip` words,
/// the environment and the configuration file.
fn serve_config(skip: usize) -> anyhow::Result<ServeConfig> {
    ServeConfig::from_args_and_file(std::env::args_os().skip(skip)).map_err(anyhow::Error::msg)
}

fn classify(
    labels: Option<String>,
    multi_label: bool,
    template: &str,
    texts: &[String],
    models: &ModelArgs,
) -> anyhow::Result<()> {
    use smart_support::inference::nli;
    let t0 = std::time::Instant::now();
    let clf = match smart_support::models::load_nli(models)? {
        Some(c) => c,
        None => bail!("no zero-shot model: pass --nli-model DIR (or a repo id in the HF cache)"),
    };
    let loaded = t0.elapsed();
    let labels = match labels {
        Some(l) => nli::parse_labels(&l),
        None => smart_support::ticket::Category::ALL
            .iter()
            .map(|c| c.to_string())
            .collect(),
    };
    // All texts at once, so the queue batches across them as the service does.
    let t1 = std::time::Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .map(|text| {
                let (clf, labels) = (&clf, &labels);
                s.spawn(move || clf.classify_blocking(text, labels, multi_label, template))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let took = t1.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    for r in results {
        let r = r.map_err(|_| anyhow::anyhow!("a classification thread panicked"))??;
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
    }
    let q = clf.queue();
    eprintln!(
        "classified {} texts in {took:.3} s ({:.3} texts/s; model loaded in {:.2} s; {} batches, {} forward passes)",
        texts.len(),
        texts.len() as f64 / took.max(1e-9),
        loaded.as_secs_f64(),
        q.batches,
        q.forward_passes
    );
    Ok(())
}

/// Raises the soft open-file limit towards what `--max-connections` needs
/// (up to the hard limit), and lowers the cap when the limit cannot be raised.
fn fit_open_file_limit(cfg: &mut ServeConfig) {
    // Database files, the listener, model files, logs.
    const RESERVED: u64 = 64;
    let want = cfg.limits.max_connections as u64 + RESERVED;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur < want {
        let cap = lim.rlim_cur.saturating_sub(RESERVED).max(16) as usize;
        tracing::warn!(
            open_files = lim.rlim_cur,
            max_connections = cap,
            "the open-file limit is low; lowering --max-connections (and --max-streams) to fit"
        );
        cfg.limits.max_connections = cap;
        cfg.limits.max_streams = cfg.limits.max_streams.min(cap / 2);
    }
}

fn serve(mut cfg: ServeConfig) -> anyhow::Result<()> {
    fit_open_file_limit(&mut cfg);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let bind = cfg.bind;
        let db = smart_support::store::redact_url(&cfg.db.display().to_string());
        // A web node runs no models: the worker nodes do.
        let models = if cfg.role.works() {
            smart_support::models::load(&cfg.models)
        } else {
            smart_support::models::LoadedModels::rules_only()
        };
        let app = smart_support::app::build(cfg, models)?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        tracing::info!(%db, "smart-support listening on http://{addr}");
        if let Some(banner) = app.state.engines.banner() {
            tracing::warn!("{banner}");
            for note in &app.state.engines.notes {
                tracing::warn!("{note}");
            }
        }
        app.run(listener, smart_support::shutdown::signal()).await;
        Ok(())
    })
}

fn backup(db: PathBuf, to: PathBuf) -> anyhow::Result<()> {
    if !db.is_file() {
        bail!("{} does not exist", db.display());
    }
    if std::fs::metadata(&db).is_ok_and(|m| m.len() == 0) {
        bail!("{} is an empty file, not a database", db.display());
    }
    // Read-only: a backup never changes (or migrates) the live database.
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let report = smart_support::store::backup(&conn, &to)
        .with_context(|| format!("cannot back up {} to {}", db.display(), to.display()))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn db_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    use smart_support::store::{Store, postgres_url, redact_url};
    let shown = |p: &Path| match postgres_url(p) {
        Some(url) => redact_url(url),
        None => p.display().to_string(),
    };
    if postgres_url(from).is_none() && !from.is_file() {
        bail!("{} does not exist", from.display());
    }
    let same = match (postgres_url(from), postgres_url(to)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => to.exists() && from.canonicalize().ok() == to.canonicalize().ok(),
        _ => false,
    };
    if same {
        bail!("--from and --to are the same database");
    }
    let source = Store::open(from).with_context(|| format!("cannot open {}", shown(from)))?;
    let dest = Store::open(to).with_context(|| format!("cannot open {}", shown(to)))?;
    let report = source
        .copy_to(&dest)
        .with_context(|| format!("cannot copy {} to {}", shown(from), shown(to)))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A new password: from `env_var`, a prompt (twice) on a terminal, or one
/// line on stdin.
fn read_password(env_var: &str, whose: &str) -> anyhow::Result<String> {
    Ok(match std::env::var(env_var) {
        Ok(p) if !p.is_empty() => p,
        _ if std::io::stdin().is_terminal() => {
            let a = rpassword::prompt_password(format!("New password for {whose}: "))?;
            let b = rpassword::prompt_password("Repeat it: ")?;
            if a != b {
                bail!("the two passwords differ; nothing changed");
            }
            a
        }
        _ => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    })
}

fn open_store(db: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(db).with_context(|| format!("cannot open {}", db.display()))
}

fn set_password(db: PathBuf) -> anyhow::Result<()> {
    let password = read_password("SMART_SUPPORT_ADMIN_PASSWORD", auth::ADMIN_USER)?;
    let hash = auth::hash_password(&password)?;
    open_store(&db)?.upsert_user_password(auth::ADMIN_USER, Role::Admin, &hash)?;
    writeln!(
        std::io::stderr(),
        "password of the user '{}' set in {}",
        auth::ADMIN_USER,
        db.display()
    )?;
    Ok(())
}

fn eval(
    set: &std::path::Path,
    kb: Option<&std::path::Path>,
    every: usize,
    floors: Option<&std::path::Path>,
    details: Option<&std::path::Path>,
    models: &ModelArgs,
) -> anyhow::Result<()> {
    use smart_support::eval;
    let items: Vec<eval::Item> = eval::read_set(set)?
        .into_iter()
        .step_by(every.max(1))
        .collect();
    let floors: Option<serde_json::Value> = match floors {
        Some(f) => Some(
            serde_json::from_str(&std::fs::read_to_string(f)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        ),
        None => None,
    };
    let mut loaded = smart_support::models::load(models);
    for note in &loaded.notes {
        tracing::warn!("{note}");
    }
    let store = smart_support::kb::standalone(&mut loaded.pipeline, kb)?;
    let knowledge = smart_support::kb::retrieve::StoreKnowledge::new(store);
    let (report, per_ticket) = eval::run(&loaded.pipeline, &knowledge, &items);
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = details {
        let lines: Vec<String> = per_ticket
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    if let Some(floors) = floors {
        let failures = eval::check_floors(&report, &floors).map_err(anyhow::Error::msg)?;
        if !failures.is_empty() {
            bail!("evaluation below its floors:\n  {}", failures.join("\n  "));
        }
        eprintln!("every figure meets its floor");
    }
    Ok(())
}

fn kb(db: PathBuf, command: KbCommand) -> anyhow::Result<()> {
    let store = Store::open(&db)?;
    match command {
        KbCommand::Import { dir, replace } => {
            let articles = smart_support::kb::read_dir(&dir)?;
            if articles.is_empty() {
                bail!("{}: no *.md articles in this folder", dir.display());
            }
            let r = store.kb_import(&articles, "import", replace)?;
            eprintln!(
                "imported {} articles from {} ({} new, {} updated, {} deleted)",
                articles.len(),
                dir.display(),
                r.created,
                r.updated,
                r.deleted
            );
        }
        KbCommand::Export { dir } => {
            let articles: Vec<_> = store
                .kb_articles(false)?
                .into_iter()
                .map(|r| r.article)
                .collect();
            let n = smart_support::kb::write_dir(&dir, &articles)?;
            eprintln!("wrote {n} articles to {}", dir.display());
        }
    }
    Ok(())
}

fn users(db: PathBuf, command: UsersCommand) -> anyhow::Result<()> {
    use smart_support::store::UserChange;
    let store = open_store(&db)?;
    let mut err = std::io::stderr();
    match command {
        UsersCommand::Add { name, role } => {
            let name = smart_support::desk::user_name(&name)?;
            let password = read_password("SMART_SUPPORT_USER_PASSWORD", &name)?;
            let user = store.create_user(&name, role, &auth::hash_password(&password)?)?;
            writeln!(err, "added {} ({})", user.name, user.role)?;
        }
        UsersCommand::List => {
            let mut out = std::io::stdout().lock();
            for u in store.users()? {
                let state = if u.active { "active" } else { "disabled" };
                writeln!(out, "{}\t{}\t{state}\t{}", u.name, u.role, u.created_at)?;
            }
        }
        UsersCommand::Disable { name } => {
            let u = store.update_user(&name, UserChange::Active(false))?;
            writeln!(
                err,
                "disabled {}; their sessions end at their next request",
                u.name
            )?;
        }
        UsersCommand::SetPassword { name } => {
            let password = read_password("SMART_SUPPORT_USER_PASSWORD", &name)?;
            let hash = auth::hash_password(&password)?;
            let u = store.update_user(&name, UserChange::Password(hash))?;
            writeln!(err, "password of {} set", u.name)?;
        }
    }
    Ok(())
}
