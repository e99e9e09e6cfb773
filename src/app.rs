//! Assembles the service: store, pipeline, worker and router; and runs it
//! until a shutdown signal, draining in order (connections, streams, worker).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::agents::learned::Labelled;
use crate::agents::policy::PolicyHandle;
use crate::cluster::{Node, Role, Turn};
use crate::config::ServeConfig;
use crate::models::LoadedModels;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
use crate::web::{self, AppState, Engines, SharedState};
use crate::worker::{self, WorkerConfig, WorkerHandle};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the database {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot set the admin password: {0}")]
    Password(String),
    #[error("{0}")]
    Config(String),
    #[error(
        "another smart-support process is serving {path} (it holds {lock}) in a role that \
         cannot share it with --role {role}: a process with --role all owns its file alone; \
         web and worker processes share one"
    )]
    Locked {
        path: String,
        lock: String,
        role: &'static str,
    },
    #[error("cannot create the lock file {lock}: {source}")]
    LockFile {
        lock: String,
        source: std::io::Error,
    },
}

pub struct App {
    pub router: Router,
    pub state: SharedState,
    /// The queue's worker (a finished task on a web node).
    pub worker: tokio::task::JoinHandle<()>,
    /// The other background tasks, by name: the change feed, the
    /// heartbeat, maintenance, deliveries, mail, the service-level timer.
    pub tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    /// Held for the life of the service on a SQLite file: exclusive for
    /// `--role all` (one serving process per file), shared for web and
    /// worker nodes. PostgreSQL takes any number of nodes of any role.
    pub lock: Option<File>,
}

/// Refuses a configuration the service must not run with.
fn check_config(config: &ServeConfig) -> Result<(), AppError> {
    if let Some(token) = config.admin_token.as_deref().filter(|t| !t.is_empty()) {
        let n = token.chars().count();
        if n < web::auth::MIN_TOKEN_CHARS {
            return Err(AppError::Config(format!(
                "SMART_SUPPORT_ADMIN_TOKEN has {n} characters; it must have at least {} \
                 (e.g. `openssl rand -hex 32`)",
                web::auth::MIN_TOKEN_CHARS
            )));
        }
    }
    let db = config.db.to_string_lossy();
    if db.contains("://") && crate::store::postgres_url(&config.db).is_none() {
        return Err(AppError::Config(format!(
            "--db takes a SQLite file or a postgres:// URL, not {}",
            crate::store::redact_url(&db)
        )));
    }
    if config.limits.max_streams >= config.limits.max_connections {
        return Err(AppError::Config(format!(
            "--max-streams ({}) must be below --max-connections ({}), or streams could take every connection",
            config.limits.max_streams, config.limits.max_connections
        )));
    }
    Ok(())
}

/// A lock on `DB.lock` (released by the OS when the process ends, however
/// it ends): exclusive for `--role all`, which owns the file (and expires
/// every lease in it at start); shared for web and worker nodes, which
/// share it with each other but not with an `all` process.
fn lock_database(db: &Path, role: Role) -> Result<File, AppError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::path::PathBuf::from(name);
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| AppError::LockFile {
            lock: lock.display().to_string(),
            source,
        })?;
    let taken = if role == Role::All {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match taken {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AppError::Locked {
            path: db.display().to_string(),
            lock: lock.display().to_string(),
            role: role.as_str(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(AppError::LockFile {
            lock: lock.display().to_string(),
            source,
        }),
    }
}

/// A store failure at start-up, naming the database (without a password).
fn store_error(config: &ServeConfig) -> impl Fn(crate::store::StoreError) -> AppError + Copy + '_ {
    move |source| AppError::Store {
        path: crate::store::redact_url(&config.db.display().to_string()),
        source,
    }
}

fn open_store(config: &ServeConfig) -> Result<(Store, Option<String>), AppError> {
    let err = store_error(config);
    let store = Store::open_service(&config.db, config.db_readers).map_err(err)?;
    if let Some(mb) = config.db_max_mb {
        store.set_max_size_mb(mb).map_err(err)?;
    }
    let integrity = store.quick_check().err();
    if let Some(problem) = &integrity {
        tracing::error!(%problem, "the database failed its integrity check; restore a backup");
    }
    Ok((store, integrity))
}

/// Imports the starter knowledge base into a new database, loads the
/// delivery policy and gives both to the troubleshooter, and trains the
/// learned classifier. Returns the policy and what the classifier learned
/// from.
fn knowledge(
    store: &Arc<Store>,
    config: &ServeConfig,
    pipeline: &mut crate::pipeline::Pipeline,
) -> Result<(PolicyHandle, Vec<Labelled>), AppError> {
    let err = store_error(config);
    let starter = crate::kb::starter::articles().map_err(|e| AppError::Config(e.to_string()))?;
    let seeded = store.kb_seed_once(&starter).map_err(err)?;
    if seeded > 0 {
        tracing::info!(articles = seeded, "imported the starter knowledge base");
    }
    let mut policy = crate::desk::load_policy(store).map_err(err)?;
    policy.force_draft = config.ai_answers == crate::config::AiAnswers::Draft;
    let policy: PolicyHandle = Arc::new(std::sync::RwLock::new(policy));
    crate::kb::attach(pipeline, store.clone(), policy.clone());
    let trained_on =
        crate::desk::learning::retrain(store, &pipeline.classifier.learned()).map_err(err)?;
    tracing::info!(examples = trained_on.len(), "classifier trained");
    Ok((policy, trained_on))
}

/// Sets the admin's password from `SMART_SUPPORT_ADMIN_PASSWORD`.
fn set_admin_password(store: &Store, config: &ServeConfig) -> Result<(), AppError> {
    if let Some(pw) = config.admin_password.as_deref().filter(|p| !p.is_empty()) {
        let hash = web::auth::hash_password(pw).map_err(|e| AppError::Password(e.to_string()))?;
        store
            .upsert_user_password(web::auth::ADMIN_USER, crate::ticket::Role::Admin, &hash)
            .map_err(|e| AppError::Password(e.to_string()))?;
        tracing::info!("password of the user 'admin' set from SMART_SUPPORT_ADMIN_PASSWORD");
    }
    Ok(())
}

fn mailer(
    settings: Option<crate::notify::mail::MailSettings>,
    config: &ServeConfig,
) -> Result<Option<crate::notify::mail::Mailer>, AppError> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    Ok(Some(crate::notify::mail::Mailer {
        transport: crate::notify::mail::transport(&settings).map_err(AppError::Config)?,
        settings,
        templates: web::assets::Templates::new(config.templates_dir.clone()),
        public_url: config.public_url(),
    }))
}

/// What a worker node runs besides the queue: the jobs one node at a time
/// does, each under its turn.
struct Jobs {
    mailer: Option<crate::notify::mail::Mailer>,
    sla: Option<Arc<crate::sla::SlaConfig>>,
    hooks: crate::notify::Webhooks,
}

fn spawn_jobs(
    store: &Arc<Store>,
    config: &ServeConfig,
    node: &Node,
    handle: &WorkerHandle,
    jobs: Jobs,
    shutdown: &Shutdown,
) -> Vec<(&'static str, tokio::task::JoinHandle<()>)> {
    let turn = |name| Turn::new(store.clone(), name, node);
    let retention = config.retention_days.map(|d| (d, config.retention_mode));
    let mut tasks = vec![(
        "maintenance",
        worker::spawn_maintenance(
            store.clone(),
            retention,
            turn("maintenance"),
            shutdown.clone(),
        ),
    )];
    let (s, sd) = (store.clone(), shutdown.clone());
    if let Some(t) = crate::notify::mail::spawn(s.clone(), jobs.mailer, turn("mail"), sd.clone()) {
        tasks.push(("mail", t));
    }
    if let Some(cfg) = jobs.sla {
        let h = handle.clone();
        let t = crate::sla::timer::spawn(s.clone(), cfg, h, turn("sla"), sd.clone());
        tasks.push(("sla", t));
    }
    if let Some(t) = crate::notify::spawn(s, jobs.hooks, turn("deliveries"), sd) {
        tasks.push(("deliveries", t));
    }
    tasks
}

/// Opens the store, starts what the node's role runs (the worker and the
/// background jobs on worker nodes; the change feed and the heartbeat on
/// every node) and builds the router. Must run inside a tokio runtime.
pub fn build(config: ServeConfig, models: LoadedModels) -> Result<App, AppError> {
    check_config(&config)?;
    let file = match &config.config_file {
        Some(path) => crate::config_file::ConfigFile::load(path).map_err(AppError::Config)?,
        None => Default::default(),
    };
    let role = config.role;
    let postgres = crate::store::postgres_url(&config.db).is_some();
    let lock = match postgres {
        true => None,
        false => Some(lock_database(&config.db, role)?),
    };
    let (store, integrity) = open_store(&config)?;
    let store = Arc::new(store);
    set_admin_password(&store, &config)?;
    // Install the metrics recorder before anything records.
    web::telemetry::handle();
    // Parse the VADER lexicon now rather than on the first ticket.
    crate::agents::vader::Vader::global();
    let LoadedModels {
        mut pipeline,
        nli,
        generator,
        notes,
    } = models;
    let (policy, trained_on) = knowledge(&store, &config, &mut pipeline)?;
    let engines = match role.works() {
        true => Engines::from_pipeline(&pipeline, notes),
        false => Engines::on_workers(),
    };
    let learned = pipeline.classifier.learned();
    let handle = WorkerHandle::new();
    let shutdown = Shutdown::default();
    let node = Node::new(role);
    // Alive before its worker claims anything: other nodes free the leases
    // of owners they do not see.
    let engines_json = serde_json::json!(engines);
    store
        .node_seen(&node.name, role.as_str(), &node.started_at, &engines_json)
        .map_err(store_error(&config))?;
    let mut tasks = vec![
        (
            "feed",
            crate::feed::spawn(store.clone(), handle.clone(), shutdown.clone()),
        ),
        (
            "heartbeat",
            crate::cluster::spawn_heartbeat(
                store.clone(),
                node.clone(),
                engines_json,
                shutdown.clone(),
            ),
        ),
    ];
    // Every node that changes tickets writes their messages and mails; the
    // worker nodes send them.
    let mailer = mailer(file.mail, &config)?;
    let mail = mailer.is_some();
    store.set_mail(mail);
    store.set_webhooks(!file.webhooks.endpoints.is_empty());
    let sla = file.sla.map(Arc::new);
    let hooks = Arc::new(file.webhooks);
    let worker = if role.works() {
        // With a generator, enough tickets run at once to fill its batch.
        let batch = generator
            .as_ref()
            .map_or(0, |_| config.models.gen_max_sequences);
        let wc = WorkerConfig {
            concurrency: config.workers.max(batch),
            grace: Duration::from_secs(config.shutdown_grace_secs),
            lease: Duration::from_secs(config.lease_secs.max(3)),
            max_attempts: config.max_attempts,
            owns_database: role == Role::All && !postgres,
        };
        let (p, h, sd) = (Arc::new(pipeline), handle.clone(), shutdown.clone());
        let worker = worker::spawn(store.clone(), p, h, wc, node.name.clone(), sd);
        crate::desk::learning::spawn_retrainer(
            store.clone(),
            learned,
            trained_on,
            shutdown.clone(),
        );
        let jobs = Jobs {
            mailer,
            sla: sla.clone(),
            hooks: (*hooks).clone(),
        };
        tasks.extend(spawn_jobs(&store, &config, &node, &handle, jobs, &shutdown));
        worker
    } else {
        tokio::spawn(async {})
    };
    if !hooks.endpoints.is_empty() {
        tracing::info!(endpoints = hooks.endpoints.len(), "webhooks on");
    }
    let parts = web::Parts {
        store,
        worker: handle,
        engines,
        nli,
        generator,
        shutdown,
        integrity,
        policy,
        hooks,
        mail,
        sla,
        node,
    };
    let state = Arc::new(AppState::new(config, parts));
    let router = match role.serves_web() {
        true => web::router(state.clone()),
        false => web::worker_router(state.clone()),
    };
    Ok(App {
        router,
        state,
        worker,
        tasks,
        lock,
    })
}

impl App {
    /// Serves on `listener` until `stop` resolves, then shuts down in order:
    /// stop accepting, end live streams, let requests and running tickets
    /// finish (up to `--shutdown-grace-secs`), put unfinished tickets back in
    /// the queue.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let shutdown = self.state.shutdown.clone();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down: no new connections; live streams end");
            trigger.trigger();
        });
        let l = &self.state.config.limits;
        let grace = Duration::from_secs(self.state.config.shutdown_grace_secs);
        let limits = web::server::ServerLimits {
            header_timeout: Duration::from_secs(l.header_timeout_secs.max(1)),
            max_connections: l.max_connections,
            drain: grace,
        };
        web::server::serve(listener, self.router, limits, shutdown).await;
        // The worker has its own grace period; a little more covers requeueing.
        if tokio::time::timeout(grace + Duration::from_secs(5), self.worker)
            .await
            .is_err()
        {
            tracing::warn!(
                "the worker did not stop in time; unfinished tickets resume on the next start"
            );
        }
        // A delivery in flight has at most its timeout (10 s) left.
        for (name, task) in self.tasks {
            if tokio::time::timeout(Duration::from_secs(12), task)
                .await
                .is_err()
            {
                tracing::warn!(task = name, "a background task did not stop in time");
            }
        }
        tracing::info!("stopped");
    }
}
