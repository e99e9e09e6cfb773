//! Ticket storage: a SQLite file (rusqlite, bundled; the default) or a
//! PostgreSQL database shared by several nodes (`sql` says how one set of
//! queries runs on both, `postgres` holds that backend's schema, `copy`
//! moves a database between them). The store is the work queue too: a
//! ticket is committed before anyone is told about it, and its
//! `processing` column (accepted → processing → done) with its lease makes
//! the pipeline's result land once per ticket across restarts and nodes.
//!
//! One connection behind a mutex serialises this process's writes, so
//! concurrent requests never meet SQLITE_BUSY inside this process; the busy
//! timeout covers other processes (e.g. `admin set-password` on a live
//! database), and on PostgreSQL the write lock spans every node.

pub mod cluster;
pub mod copy;
pub mod desk;
pub mod kb;
pub mod mail;
pub mod migrations;
pub mod outbox;
pub mod pg_tls;
pub mod postgres;
pub mod queue;
pub mod search;
pub mod sla;
pub mod sql;
pub mod users;

pub use desk::{
    Agreement, Author, CannedReply, Change, Message, NewMessage, Override, TicketChanges,
};
pub use users::{User, UserChange};

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::RngExt;
use serde::Serialize;
use sql::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use subtle::ConstantTimeEq;

use crate::clock;
use crate::ticket::{Analysis, Category, Event, EventKind, Priority, Status, TicketInput};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The disk (or `--db-max-mb`) is full: writes fail until space is freed.
    #[error("the database is full (disk or configured size limit): {0}")]
    Full(rusqlite::Error),
    /// The file cannot be written or read right now (I/O error, read-only).
    #[error("the database cannot be used right now: {0}")]
    Unavailable(rusqlite::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is an empty (0-byte) file, not a database; restore it from a backup \
         (smart-support backup) or remove it to start with an empty database"
    )]
    EmptyFile { path: String },
    #[error("{path} is not a smart-support database (or it is damaged): {detail}")]
    NotADatabase { path: String, detail: String },
    #[error(
        "the database schema is version {found}, newer than this program supports ({supported})"
    )]
    SchemaTooNew { found: usize, supported: usize },
    #[error("ticket not found")]
    NotFound,
    #[error("no such user")]
    UserNotFound,
    #[error("{0}")]
    Conflict(String),
    /// The same `Idempotency-Key` came with a different ticket.
    #[error("this Idempotency-Key was already used for a different ticket")]
    KeyReused,
    #[error("backup failed: {0}")]
    Backup(String),
    #[error("copy failed: {0}")]
    Copy(String),
    #[error("{0}")]
    Url(String),
    #[error("database error: {}", sql::pg_message(.0))]
    Postgres(tokio_postgres::Error),
    /// The database server cannot take the query right now (the
    /// connection is lost, it is read-only or shutting down, an I/O fault).
    #[error("the database cannot be reached right now: {0}")]
    Gone(String),
    /// The database server is out of disk (or memory).
    #[error("the database is full (the server's disk or memory): {0}")]
    ServerFull(String),
    #[error("stored data has an unexpected type: {0}")]
    Column(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DiskFull) => StoreError::Full(e),
            Some(
                C::SystemIoFailure
                | C::ReadOnly
                | C::CannotOpen
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::OutOfMemory,
            ) => StoreError::Unavailable(e),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl From<sql::Error> for StoreError {
    fn from(e: sql::Error) -> Self {
        match e {
            sql::Error::Sqlite(e) => StoreError::from(e),
            sql::Error::NoRows => StoreError::from(rusqlite::Error::QueryReturnedNoRows),
            sql::Error::Postgres(e) if e.is_closed() || e.code().is_none() => {
                StoreError::Gone(sql::pg_message(&e))
            }
            sql::Error::Postgres(e) => match e.code().map(|c| c.code()) {
                // Out of disk or memory on the server.
                Some(c) if c.starts_with("53") => StoreError::ServerFull(sql::pg_message(&e)),
                // Read-only, shutting down, connection or I/O trouble.
                Some(c)
                    if c == "25006"
                        || c.starts_with("08")
                        || c.starts_with("57P")
                        || c.starts_with("58") =>
                {
                    StoreError::Gone(sql::pg_message(&e))
                }
                _ => StoreError::Postgres(e),
            },
            sql::Error::Gone => StoreError::Gone(e.to_string()),
            e @ sql::Error::Url(_) => StoreError::Url(e.to_string()),
            e @ sql::Error::Column { .. } => StoreError::Column(e.to_string()),
        }
    }
}

impl StoreError {
    /// A fault of the storage (full, I/O, corrupt), not of the request.
    pub fn is_storage_fault(&self) -> bool {
        match self {
            StoreError::Full(_)
            | StoreError::ServerFull(_)
            | StoreError::Unavailable(_)
            | StoreError::Gone(_) => true,
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ),
            _ => false,
        }
    }
}

/// How far the pipeline got with a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Processing {
    Accepted,
    Processing,
    Done,
}

impl Processing {
    fn parse(s: &str) -> Processing {
        match s {
            "done" => Processing::Done,
            "processing" => Processing::Processing,
            _ => Processing::Accepted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rating {
    pub stars: u8,
    pub comment: Option<String>,
}

/// A stored ticket with its whole history.
#[derive(Debug, Clone)]
pub struct TicketRecord {
    pub id: i64,
    pub token: String,
    pub input: TicketInput,
    pub status: Status,
    pub processing: Processing,
    pub pipeline_runs: i64,
    /// Claims of the ticket by a worker (a run that a shutdown handed back
    /// is not counted).
    pub attempts: i64,
    /// Why the models' run was given up and the rules answered, if it was.
    pub failure: Option<String>,
    pub analysis: Option<Analysis>,
    pub events: Vec<Event>,
    pub rating: Option<Rating>,
    pub created_at: String,
    pub updated_at: String,
    /// The stored category and priority: the AI's, or a person's override.
    pub category: Option<Category>,
    pub priority: Option<Priority>,
    pub assignee: Option<String>,
    /// Every message, internal ones too (views filter them for customers).
    pub messages: Vec<Message>,
    pub history: Vec<Change>,
}

/// A ticket's progress, for cheap polling.
#[derive(Debug, Clone)]
pub struct TicketStatus {
    /// Public messages on the ticket (a new one makes live pages refresh).
    pub public_messages: i64,
    pub status: Status,
    pub processing: Processing,
    pub updated_at: String,
    pub events: Vec<Event>,
}

/// One row of the admin list.
#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    pub id: i64,
    pub subject: String,
    pub status: Status,
    pub category: Option<Category>,
    pub priority: Option<Priority>,
    pub sentiment: Option<String>,
    pub risk: Option<String>,
    pub rating: Option<u8>,
    pub created_at: String,
    pub updated_at: String,
    pub assignee: Option<String>,
    /// A service-level target was missed.
    pub sla_breached: bool,
    /// A running target has used its at-risk share.
    pub sla_at_risk: bool,
    /// The earliest due time of a running target, and which target.
    pub sla_due: Option<String>,
    pub sla_target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Newest,
    Oldest,
    Priority,
    Updated,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "newest" => Some(Sort::Newest),
            "oldest" => Some(Sort::Oldest),
            "priority" => Some(Sort::Priority),
            "updated" => Some(Sort::Updated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Newest => "newest",
            Sort::Oldest => "oldest",
            Sort::Priority => "priority",
            Sort::Updated => "updated",
        }
    }

    fn order_by(self) -> &'static str {
        match self {
            Sort::Newest => "t.id DESC",
            Sort::Oldest => "t.id ASC",
            Sort::Priority => {
                "CASE t.priority WHEN 'Critical' THEN 0 WHEN 'High' THEN 1 WHEN 'Medium' THEN 2 \
                 WHEN 'Low' THEN 3 ELSE 4 END, t.id DESC"
            }
            Sort::Updated => "t.updated_at DESC, t.id DESC",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub q: Option<String>,
    pub category: Option<Category>,
    pub priority: Option<Priority>,
    pub status: Option<Status>,
    /// A user's name, or "" for unassigned tickets.
    pub assignee: Option<String>,
    /// Only tickets that missed a service-level target, or that are at
    /// risk of missing one.
    pub sla: Option<sla::SlaFilter>,
    pub sort: Sort,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

/// What the dashboard draws.
#[derive(Debug, Clone, Default)]
pub struct DashboardStats {
    pub by_category: Vec<(String, i64)>,
    pub by_priority: Vec<(String, i64)>,
    /// (day, status, tickets created that day now in that status).
    pub daily: Vec<(String, String, i64)>,
    pub total: i64,
    /// Tickets with an AI result.
    pub processed: i64,
    /// Tickets that were escalated at some point.
    pub escalated: i64,
    pub rated: i64,
    pub average_rating: Option<f64>,
}

/// The last write's outcome, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct WriteHealth {
    /// The error of the most recent failed write, cleared by the next success.
    pub failing: Option<String>,
    /// The same, when the database was full (only a real write clears it).
    pub full: Option<String>,
}

/// The runtime a PostgreSQL store's sessions run on, shut down in the
/// background when the store goes (a runtime may not be dropped inside
/// another's async context).
struct PgRuntime(Option<tokio::runtime::Runtime>);

impl PgRuntime {
    fn new() -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Gone(format!("cannot start the PostgreSQL runtime: {e}")))?;
        Ok(PgRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime lives as long as the store"),
        }
    }
}

impl Drop for PgRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The URL in `--db`, when it names a PostgreSQL database.
pub fn postgres_url(db: &Path) -> Option<&str> {
    db.to_str()
        .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// `url` without its password (for logs and messages).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

pub struct Store {
    path: std::path::PathBuf,
    /// The one connection that writes (and reads, when there are no readers).
    writer: Mutex<Connection>,
    /// Read-only connections: WAL lets them read while the writer writes, so
    /// polling, streams and dashboards never queue behind intake.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    write_health: Mutex<WriteHealth>,
    /// Whether changes write webhook messages (`outbox`).
    webhooks_on: std::sync::atomic::AtomicBool,
    /// Whether changes queue mails (`mail`).
    mail_on: std::sync::atomic::AtomicBool,
    /// How far the database server's clock is ahead of this machine's, in
    /// milliseconds (0 on SQLite): leases and heartbeats are compared
    /// across machines, so they are written in the server's time.
    clock_skew_ms: std::sync::atomic::AtomicI64,
    /// The PostgreSQL URL, with its password (never shown; `path` is the
    /// redacted form). `None` on SQLite.
    pg_url: Option<String>,
    /// PostgreSQL's sessions run here (`None` on SQLite). Last, so the
    /// connections above close first.
    _runtime: Option<PgRuntime>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The channel on which PostgreSQL announces new events (`add_event`).
const CHANGES_CHANNEL: &str = "smart_support_events";

/// The outcome of `Store::backup_to`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub path: String,
    pub bytes: u64,
    pub tickets: i64,
    pub events: i64,
    pub schema_version: usize,
    pub integrity: String,
}

/// A stored ticket's id and token; `replayed` when an `Idempotency-Key`
/// matched an earlier submission instead of creating a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: i64,
    pub token: String,
    pub replayed: bool,
}

const TOKEN_PREFIX_LEN: usize = 8;

/// A 192-bit random tracking token, hex encoded.
fn new_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (creating when missing) the database file and migrates it, with
    /// no extra read connections (what command-line tools use).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, migrations::LATEST, 0)
    }

    /// Opens for the service: `readers` read-only connections beside the writer.
    pub fn open_service(path: &Path, readers: usize) -> Result<Store, StoreError> {
        Self::open_with(path, migrations::LATEST, readers)
    }

    /// Opens at a given schema version; tests use it to check upgrades.
    pub fn open_to(path: &Path, version: usize) -> Result<Store, StoreError> {
        Self::open_with(path, version, 0)
    }

    fn open_with(path: &Path, version: usize, readers: usize) -> Result<Store, StoreError> {
        if let Some(url) = postgres_url(path) {
            return Self::open_postgres(url, version, readers);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // SQLite would quietly start a new database in an empty file: a
        // truncated database must be an error, never a fresh start.
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            return Err(StoreError::EmptyFile {
                path: path.display().to_string(),
            });
        }
        let not_a_db = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                StoreError::NotADatabase {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                }
            }
            _ => StoreError::from(e),
        };
        let lite = rusqlite::Connection::open(path)?;
        lite.busy_timeout(Duration::from_secs(10))?;
        lite.pragma_update(None, "journal_mode", "WAL")
            .map_err(not_a_db)?;
        lite.pragma_update(None, "synchronous", "NORMAL")?;
        lite.pragma_update(None, "foreign_keys", true)?;
        let mut conn = Connection::Sqlite(lite);
        migrations::migrate_to(&mut conn, version).map_err(|e| match e {
            StoreError::Sqlite(e) => not_a_db(e),
            other => other,
        })?;
        let readers = (0..readers)
            .map(|_| {
                let r = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                r.busy_timeout(Duration::from_secs(10))?;
                Ok(Mutex::new(Connection::Sqlite(r)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self::with_connections(
            path.to_path_buf(),
            conn,
            readers,
            None,
        ))
    }

    fn with_connections(
        path: std::path::PathBuf,
        writer: Connection,
        readers: Vec<Mutex<Connection>>,
        runtime: Option<PgRuntime>,
    ) -> Store {
        Store {
            path,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            write_health: Mutex::new(WriteHealth::default()),
            webhooks_on: std::sync::atomic::AtomicBool::new(false),
            mail_on: std::sync::atomic::AtomicBool::new(false),
            clock_skew_ms: std::sync::atomic::AtomicI64::new(0),
            pg_url: None,
            _runtime: runtime,
        }
    }

    /// Opens a PostgreSQL database: the writer and `readers` (at least one)
    /// sessions on a runtime of the store's own, and migrates it.
    fn open_postgres(url: &str, version: usize, readers: usize) -> Result<Store, StoreError> {
        let runtime = PgRuntime::new()?;
        let connect = || sql::PgConn::connect(url, runtime.handle()).map(Connection::Postgres);
        let mut writer = connect()?;
        migrations::migrate_to(&mut writer, version)?;
        let readers = (0..readers.max(1))
            .map(|_| Ok(Mutex::new(connect()?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let shown = std::path::PathBuf::from(redact_url(url));
        let mut store = Self::with_connections(shown, writer, readers, Some(runtime));
        store.pg_url = Some(url.to_string());
        store.read_server_clock()?;
        Ok(store)
    }

    /// Now by the database's clock (leases, heartbeats), formatted like
    /// `clock::now()`; `lease_after`/`lease_ago` likewise.
    pub(crate) fn db_now(&self) -> String {
        clock::now_plus_ms(self.clock_skew_ms())
    }

    pub(crate) fn db_after(&self, d: Duration) -> String {
        clock::now_plus_ms(self.clock_skew_ms().saturating_add(millis(d)))
    }

    pub(crate) fn db_ago(&self, d: Duration) -> String {
        clock::now_plus_ms(self.clock_skew_ms().saturating_sub(millis(d)))
    }

    /// How far the database server's clock is ahead of this machine's (ms).
    pub fn clock_skew_ms(&self) -> i64 {
        self.clock_skew_ms.load(Ordering::Relaxed)
    }

    /// Reads the PostgreSQL server's clock and keeps its offset from this
    /// machine's (the round trip's middle); nothing on SQLite, whose clock
    /// is this machine's. Called at open and with every heartbeat.
    pub(crate) fn read_server_clock(&self) -> Result<(), StoreError> {
        if self.pg_url.is_none() {
            return Ok(());
        }
        let local_ms = || {
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(i64::MAX)
        };
        let before = local_ms();
        let server: i64 = self.reader().query_row(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            [],
            |r| r.get(0),
        )?;
        let after = local_ms();
        let skew = server - before / 2 - after / 2;
        self.clock_skew_ms.store(skew, Ordering::Relaxed);
        Ok(())
    }

    /// Which engine the store runs on.
    pub fn backend(&self) -> sql::Backend {
        // Known from how it was opened: no connection is taken to ask.
        match self.pg_url {
            Some(_) => sql::Backend::Postgres,
            None => sql::Backend::Sqlite,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent
        // (open transactions roll back on drop), so the poison is harmless.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for reading: a free reader, else the next one in turn
    /// (or the writer when there are none).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        if n == 0 {
            return self.conn();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(c) = self.readers[(start + i) % n].try_lock() {
                return c;
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a write and remembers whether writes currently fail.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = f(&mut self.conn());
        let mut h = self.write_health.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e) if e.is_storage_fault() => {
                h.failing = Some(e.to_string());
                h.full = matches!(e, StoreError::Full(_) | StoreError::ServerFull(_))
                    .then(|| e.to_string());
            }
            Ok(_) => {
                h.failing = None;
                h.full = None;
            }
            Err(_) => {}
        }
        result
    }

    /// Holds the writer for `d` (calling `held` once it has it): tests use
    /// it to show that reads do not queue behind a long write.
    #[doc(hidden)]
    pub fn hold_writer_for_test(&self, d: Duration, held: impl FnOnce()) {
        let _guard = self.conn();
        held();
        std::thread::sleep(d);
    }

    /// Makes every write fail as on a read-only disk (SQLite's `query_only`)
    /// until called with `false`: tests of the storage-fault paths use it.
    #[doc(hidden)]
    pub fn block_writes_for_test(&self, blocked: bool) -> Result<(), StoreError> {
        let conn = self.conn();
        match conn.sqlite() {
            Some(c) => c.pragma_update(None, "query_only", blocked)?,
            None => {
                let on = if blocked { "on" } else { "off" };
                conn.execute_batch(&format!("SET default_transaction_read_only = {on}"))?
            }
        }
        Ok(())
    }

    /// Runs `sql` on the writer: tests set up what the API cannot.
    #[doc(hidden)]
    pub fn sql_for_test(&self, sql: &str) -> Result<(), StoreError> {
        self.write(|c| Ok(c.execute_batch(sql)?))
    }

    /// The first column of the first row of `sql` as a number (`None`
    /// when there is no row): tests read what the API does not show.
    #[doc(hidden)]
    pub fn number_for_test(&self, sql: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .reader()
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten())
    }

    /// As `number_for_test`, for text.
    #[doc(hidden)]
    pub fn text_for_test(&self, sql: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row(sql, [], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    pub fn write_health(&self) -> WriteHealth {
        self.write_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Proves the database can be written: a committed transaction that
    /// needs room for 64 KiB (more than any one request stores; a full disk
    /// or `--db-max-mb` makes it fail) and leaves nothing behind.
    ///
    /// A request that found the database full stays the verdict until a
    /// real write succeeds: the probe's room can be pages a background merge
    /// just freed, which does not mean the next ticket fits. Other faults
    /// (I/O, read-only) clear when the probe succeeds.
    pub fn write_probe(&self) -> Result<(), StoreError> {
        let was_full = self
            .write_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .full
            .clone();
        let result = self.write(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let fill = match tx.backend() {
                sql::Backend::Sqlite => {
                    "INSERT INTO health_probe (filler) VALUES (zeroblob(65536))"
                }
                sql::Backend::Postgres => {
                    "INSERT INTO health_probe (filler) VALUES (decode(repeat('00', 65536), 'hex'))"
                }
            };
            tx.execute(fill, [])?;
            tx.execute("DELETE FROM health_probe", [])?;
            tx.commit()?;
            Ok(())
        });
        if result.is_ok() && was_full.is_some() {
            let mut h = self.write_health.lock().unwrap_or_else(|p| p.into_inner());
            h.failing.clone_from(&was_full);
            h.full = was_full;
        }
        result
    }

    /// SQLite's `quick_check`: `Ok(())` or the problems it found
    /// (PostgreSQL checks its own pages: always `Ok`).
    pub fn quick_check(&self) -> Result<(), String> {
        let conn = self.conn();
        if conn.backend() == sql::Backend::Postgres {
            return Ok(());
        }
        let rows: Result<Vec<String>, _> = conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect());
        match rows {
            Ok(r) if r.len() == 1 && r[0] == "ok" => Ok(()),
            Ok(r) => Err(r.into_iter().take(5).collect::<Vec<_>>().join("; ")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Caps the database at `mb` MiB: past it writes fail as on a full disk
    /// (SQLite only: a PostgreSQL server's room is its administrator's).
    pub fn set_max_size_mb(&self, mb: u64) -> Result<(), StoreError> {
        let conn = self.conn();
        if conn.backend() == sql::Backend::Postgres {
            return Err(StoreError::Conflict(
                "--db-max-mb applies to a SQLite file; limit a PostgreSQL database on its server"
                    .into(),
            ));
        }
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (mb as i64 * 1024 * 1024 / page.max(512)).max(1);
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<usize, StoreError> {
        migrations::version(&self.reader())
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        self.reader().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Records an event in `tx`, which holds the write lock (an immediate
    /// transaction): on PostgreSQL event ids are then committed in id
    /// order, which the change feed relies on (it reads by id), and the
    /// commit announces them to every node listening (`listen_for_changes`).
    pub(super) fn add_event(
        tx: &Transaction,
        id: i64,
        kind: EventKind,
        detail: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO events (ticket_id, kind, detail, at) VALUES (?1, ?2, ?3, ?4)",
            params![id, kind.as_str(), detail, at],
        )?;
        tx.announce(CHANGES_CHANNEL);
        Ok(())
    }

    /// On PostgreSQL, a signal raised whenever another session commits new
    /// events (and after each reconnect of the listening session, when
    /// something may have been missed); `None` on SQLite, where the change
    /// feed's poll is all there is. Each call starts one listening session.
    pub fn listen_for_changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        let (url, rt) = (self.pg_url.as_deref()?, self._runtime.as_ref()?);
        let heard = Arc::new(tokio::sync::Notify::new());
        sql::pg_listen(url, CHANGES_CHANNEL, rt.handle(), heard.clone());
        Some(heard)
    }

    /// Stores a new ticket (status Open) with its first event, in one transaction.
    pub fn create_ticket(&self, input: &TicketInput) -> Result<(i64, String), StoreError> {
        let c = self.create_ticket_once(input, None)?;
        Ok((c.id, c.token))
    }

    /// Like `create_ticket`, but a submission whose `key` was seen before
    /// returns the ticket it created (the same id and token) instead of a new
    /// one; the same key with a different subject or description is refused.
    pub fn create_ticket_once(
        &self,
        input: &TicketInput,
        key: Option<&str>,
    ) -> Result<Created, StoreError> {
        self.create_ticket_with(input, key, None)
    }

    /// Like `create_ticket_once`, with the customer's e-mail address (the
    /// "received" mail is queued with the ticket).
    pub fn create_ticket_with(
        &self,
        input: &TicketInput,
        key: Option<&str>,
        email: Option<&str>,
    ) -> Result<Created, StoreError> {
        let token = new_token();
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = key {
                let seen = tx
                    .query_row(
                        "SELECT t.id, t.token, t.subject, t.description FROM idempotency_keys k
                         JOIN tickets t ON t.id = k.ticket_id WHERE k.key = ?1",
                        [key],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                            ))
                        },
                    )
                    .optional()?;
                if let Some((id, token, subject, description)) = seen {
                    if subject != input.subject || description != input.description {
                        return Err(StoreError::KeyReused);
                    }
                    return Ok(Created {
                        id,
                        token,
                        replayed: true,
                    });
                }
            }
            let id: i64 = tx.query_row(
                "INSERT INTO tickets (token, token_prefix, subject, description, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
                params![token, &token[..TOKEN_PREFIX_LEN], input.subject, input.description, Status::Open.as_str(), now],
                |r| r.get(0),
            )?;
            if let Some(email) = email {
                tx.execute("UPDATE tickets SET email = ?2 WHERE id = ?1", params![id, email])?;
            }
            self.event(&tx, id, EventKind::Submitted, "", &now)?;
            self.mail_customer(&tx, mail::MailKind::Received, id, serde_json::json!({}))?;
            if let Some(key) = key {
                tx.execute(
                    "INSERT INTO idempotency_keys (key, ticket_id, created_at) VALUES (?1, ?2, ?3)",
                    params![key, id, now],
                )?;
            }
            tx.commit()?;
            Ok(Created {
                id,
                token: token.clone(),
                replayed: false,
            })
        })
    }

    /// Stores the pipeline's whole result and the status it calls for, in one
    /// transaction. A ticket resolved by hand meanwhile stays resolved.
    /// The lease (`claim`) fences it: a worker that lost its lease gets a
    /// conflict and stores nothing.
    pub fn complete(
        &self,
        claim: &queue::Claim,
        analysis: &Analysis,
    ) -> Result<Status, StoreError> {
        self.complete_with(claim, analysis, false, None)
    }

    /// Like `complete`; with `ai_message` the AI's answer is also recorded
    /// as a public message by `ai` (it reaches the customer at once), and
    /// `failure` (why the models' run was given up) is kept for staff, in
    /// the same transaction. The lease's owner stays on the ticket: which
    /// node processed it.
    pub fn complete_with(
        &self,
        claim: &queue::Claim,
        analysis: &Analysis,
        ai_message: bool,
        failure: Option<&str>,
    ) -> Result<Status, StoreError> {
        let now = clock::now();
        let json = serde_json::to_string(analysis)?;
        let id = claim.id;
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT status FROM tickets WHERE id = ?1 AND processing = 'processing'
                     AND lease_token = ?2",
                    params![id, claim.token],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(current) = current else {
                return Err(StoreError::Conflict(format!(
                    "ticket {id} is not being processed under this lease"
                )));
            };
            let status = if current == Status::Resolved.as_str() {
                Status::Resolved
            } else {
                analysis.status
            };
            tx.execute(
                "UPDATE tickets SET processing = 'done', analysis = ?2, category = ?3, priority = ?4,
                     sentiment = ?5, risk = ?6, status = ?7, updated_at = ?8, failure = ?9,
                     lease_token = NULL, lease_expires = NULL
                 WHERE id = ?1",
                params![
                    id,
                    json,
                    analysis.category.as_str(),
                    analysis.priority.as_str(),
                    analysis.sentiment.as_str(),
                    analysis.risk.as_str(),
                    status.as_str(),
                    now,
                    failure
                ],
            )?;
            let detail = format!("{} · {} priority", analysis.category, analysis.priority);
            self.event(&tx, id, EventKind::AiCompleted, &detail, &now)?;
            // The AI's decisions are changes too, recorded like a person's.
            desk::record_change(&tx, id, "category", None, Some(analysis.category.as_str()), "ai", &now)?;
            desk::record_change(&tx, id, "priority", None, Some(analysis.priority.as_str()), "ai", &now)?;
            if status.as_str() != current {
                desk::record_change(&tx, id, "status", Some(&current), Some(status.as_str()), "ai", &now)?;
            }
            if let Some(e) = &analysis.escalation {
                self.event(&tx, id, EventKind::Escalated, &e.reasons.join("; "), &now)?;
            }
            if ai_message {
                let body = desk::answer_text(&analysis.solution);
                desk::add_ai_message(&tx, id, &body, &now)?;
                let message = serde_json::json!({
                    "author": "ai", "author_kind": "ai", "body": body, "created_at": now,
                });
                self.enqueue_webhook(&tx, crate::notify::webhook::EventType::TicketMessage, id, Some(("message", message)))?;
            }
            if analysis.status == Status::Resolved && current != Status::Resolved.as_str() {
                self.event(&tx, id, EventKind::Resolved, "by the AI assistant", &now)?;
            }
            tx.commit()?;
            Ok(status)
        })
    }

    /// Marks a ticket resolved by `by` (`customer`, a staff user's name or
    /// `api`). Resolving twice is a no-op.
    pub fn resolve(&self, id: i64, by: &str) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let status: Option<String> = tx
                .query_row("SELECT status FROM tickets WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            match status {
                None => return Err(StoreError::NotFound),
                Some(s) if s == Status::Resolved.as_str() => return Ok(()),
                Some(_) => {}
            }
            let s_from = status.unwrap_or_default();
            tx.execute(
                "UPDATE tickets SET status = 'Resolved', updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            let detail = if by == "customer" {
                "by the customer".to_string()
            } else {
                format!("by {by}")
            };
            self.event(&tx, id, EventKind::Resolved, &detail, &now)?;
            desk::record_change(
                &tx,
                id,
                "status",
                Some(&s_from),
                Some(Status::Resolved.as_str()),
                by,
                &now,
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Stores the customer's rating (a later one replaces it). Only a resolved
    /// ticket can be rated.
    pub fn rate(&self, id: i64, stars: u8, comment: Option<&str>) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let status: Option<String> = tx
                .query_row("SELECT status FROM tickets WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            match status {
                None => return Err(StoreError::NotFound),
                Some(s) if s != Status::Resolved.as_str() => {
                    return Err(StoreError::Conflict(
                        "only a resolved ticket can be rated".into(),
                    ));
                }
                Some(_) => {}
            }
            tx.execute(
                "UPDATE tickets SET rating = ?2, rating_comment = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, stars, comment, now],
            )?;
            // A new rating replaces the old one, in the history too: re-rating
            // must not grow the event log.
            tx.execute(
                "DELETE FROM events WHERE ticket_id = ?1 AND kind = 'rated'",
                [id],
            )?;
            self.event(&tx, id, EventKind::Rated, &format!("{stars} stars"), &now)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The ticket whose secret token this is. The index narrows candidates by
    /// a prefix; the whole token is then compared in constant time.
    pub fn id_for_token(&self, token: &str) -> Result<Option<i64>, StoreError> {
        if token.len() < TOKEN_PREFIX_LEN || !token.is_ascii() {
            return Ok(None);
        }
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT id, token FROM tickets WHERE token_prefix = ?1")?;
        let rows = stmt.query_map([&token[..TOKEN_PREFIX_LEN]], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, stored) = row?;
            if stored.len() == token.len() && bool::from(stored.as_bytes().ct_eq(token.as_bytes()))
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub fn get(&self, id: i64) -> Result<TicketRecord, StoreError> {
        let conn = self.reader();
        let row = conn
            .query_row(
                "SELECT id, token, subject, description, status, processing, pipeline_runs, analysis,
                        rating, rating_comment, created_at, updated_at, category, priority, assignee,
                        attempts, failure
                 FROM tickets WHERE id = ?1",
                [id],
                |r| {
                    let analysis: Option<String> = r.get(7)?;
                    let rating: Option<u8> = r.get(8)?;
                    Ok((
                        TicketRecord {
                            id: r.get(0)?,
                            token: r.get(1)?,
                            input: TicketInput { subject: r.get(2)?, description: r.get(3)? },
                            status: r.get::<_, String>(4)?.parse().unwrap_or(Status::Open),
                            processing: Processing::parse(&r.get::<_, String>(5)?),
                            pipeline_runs: r.get(6)?,
                            attempts: r.get(15)?,
                            failure: r.get(16)?,
                            analysis: None,
                            events: Vec::new(),
                            rating: rating.map(|stars| Rating { stars, comment: None }),
                            created_at: r.get(10)?,
                            updated_at: r.get(11)?,
                            category: r.get::<_, Option<String>>(12)?.and_then(|s| s.parse().ok()),
                            priority: r.get::<_, Option<String>>(13)?.and_then(|s| s.parse().ok()),
                            assignee: r.get(14)?,
                            messages: Vec::new(),
                            history: Vec::new(),
                        },
                        analysis,
                        r.get::<_, Option<String>>(9)?,
                    ))
                },
            )
            .optional()?;
        let Some((mut record, analysis, comment)) = row else {
            return Err(StoreError::NotFound);
        };
        record.analysis = analysis.map(|a| serde_json::from_str(&a)).transpose()?;
        if let Some(r) = record.rating.as_mut() {
            r.comment = comment;
        }
        record.events = Self::events(&conn, id)?;
        record.messages = Self::messages_of(&conn, id)?;
        record.history = Self::history_of(&conn, id)?;
        Ok(record)
    }

    fn events(conn: &Connection, id: i64) -> Result<Vec<Event>, StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT kind, detail, at FROM events WHERE ticket_id = ?1 ORDER BY id",
        )?;
        let events = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .filter_map(|row| match row {
                Ok((kind, detail, at)) => EventKind::parse(&kind)
                    .filter(|k| k.in_history())
                    .map(|kind| Ok(Event { kind, detail, at })),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        Ok(events)
    }

    /// What polling needs, without reading the ticket's text or AI result.
    pub fn status(&self, id: i64) -> Result<TicketStatus, StoreError> {
        let conn = self.reader();
        let row = conn
            .query_row(
                "SELECT status, processing, updated_at,
                        (SELECT COUNT(*) FROM messages m WHERE m.ticket_id = t.id AND m.internal = 0)
                 FROM tickets t WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((status, processing, updated_at, public_messages)) = row else {
            return Err(StoreError::NotFound);
        };
        Ok(TicketStatus {
            public_messages,
            status: status.parse().unwrap_or(Status::Open),
            processing: Processing::parse(&processing),
            updated_at,
            events: Self::events(&conn, id)?,
        })
    }

    /// One page of tickets matching the query, and how many match in all.
    pub fn list(&self, q: &ListQuery) -> Result<(Vec<TicketSummary>, i64), StoreError> {
        const SLA_BREACHED: &str =
            "SELECT 1 FROM events e WHERE e.ticket_id = t.id AND e.kind = 'sla_breached'";
        const SLA_AT_RISK: &str =
            "SELECT 1 FROM sla_clocks c WHERE c.ticket_id = t.id AND c.at_risk = 1";
        const SLA_NEXT: &str = "FROM sla_clocks c WHERE c.ticket_id = t.id
            AND c.met_at IS NULL AND c.breached_at IS NULL ORDER BY c.due LIMIT 1";
        let mut filters = Vec::new();
        let mut args: Vec<String> = Vec::new();
        let conn = self.reader();
        let query = search::parse(q.q.as_deref().unwrap_or(""));
        match conn.backend() {
            sql::Backend::Sqlite => {
                let (must, must_not) = query.fts5();
                for (fts, op) in [(must, "IN"), (must_not, "NOT IN")] {
                    if let Some(fts) = fts {
                        args.push(fts);
                        filters.push(format!(
                            "t.id {op} (SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH ?{})",
                            args.len()
                        ));
                    }
                }
            }
            sql::Backend::Postgres => {
                if let Some(tsq) = query.tsquery() {
                    args.push(tsq);
                    filters.push(format!(
                        "to_tsvector('simple', t.subject || ' ' || t.description) \
                         @@ to_tsquery('simple', ?{})",
                        args.len()
                    ));
                }
            }
        }
        for (column, value) in [
            ("t.category", q.category.map(|c| c.as_str())),
            ("t.priority", q.priority.map(|p| p.as_str())),
            ("t.status", q.status.map(|s| s.as_str())),
        ] {
            if let Some(v) = value {
                args.push(v.to_string());
                filters.push(format!("{column} = ?{}", args.len()));
            }
        }
        match q.sla {
            Some(sla::SlaFilter::Breached) => filters.push(format!("EXISTS ({SLA_BREACHED})")),
            Some(sla::SlaFilter::AtRisk) => filters.push(format!("EXISTS ({SLA_AT_RISK})")),
            None => {}
        }
        match q.assignee.as_deref() {
            Some("") => filters.push("t.assignee IS NULL".to_string()),
            Some(name) => {
                args.push(name.to_string());
                filters.push(format!("t.assignee = ?{} COLLATE NOCASE", args.len()));
            }
            None => {}
        }
        let where_sql = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM tickets t {where_sql}"),
            sql::params_from_iter(&args),
            |r| r.get(0),
        )?;
        let per_page = q.per_page.max(1);
        let offset = (q.page.max(1) as i64 - 1) * per_page as i64;
        let sql = format!(
            "SELECT t.id, t.subject, t.status, t.category, t.priority, t.sentiment, t.risk, t.rating,
                    t.created_at, t.updated_at, t.assignee, EXISTS ({SLA_BREACHED}),
                    EXISTS ({SLA_AT_RISK}), (SELECT c.due {SLA_NEXT}), (SELECT c.target {SLA_NEXT})
             FROM tickets t {where_sql} ORDER BY {} LIMIT {per_page} OFFSET {offset}",
            q.sort.order_by()
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map(sql::params_from_iter(&args), |r| {
                Ok(TicketSummary {
                    id: r.get(0)?,
                    subject: r.get(1)?,
                    status: r.get::<_, String>(2)?.parse().unwrap_or(Status::Open),
                    category: r.get::<_, Option<String>>(3)?.and_then(|s| s.parse().ok()),
                    priority: r.get::<_, Option<String>>(4)?.and_then(|s| s.parse().ok()),
                    sentiment: r.get(5)?,
                    risk: r.get(6)?,
                    rating: r.get(7)?,
                    created_at: r.get(8)?,
                    updated_at: r.get(9)?,
                    assignee: r.get(10)?,
                    sla_breached: r.get(11)?,
                    sla_at_risk: r.get(12)?,
                    sla_due: r.get(13)?,
                    sla_target: r.get(14)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// How many tickets have each status (every status listed, zeros included).
    pub fn status_counts(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT status, COUNT(*) FROM tickets GROUP BY status")?;
        let found: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Status::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    found
                        .iter()
                        .find(|(k, _)| k == s.as_str())
                        .map_or(0, |(_, n)| *n),
                )
            })
            .collect())
    }

    /// Figures for the dashboard charts; `since` is the first day (YYYY-MM-DD)
    /// of the daily series.
    pub fn dashboard(&self, since: &str) -> Result<DashboardStats, StoreError> {
        let conn = self.reader();
        let group = |col: &str| -> Result<Vec<(String, i64)>, StoreError> {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {col}, COUNT(*) FROM tickets WHERE {col} IS NOT NULL GROUP BY {col}"
            ))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        };
        let by_category = group("category")?;
        let by_priority = group("priority")?;
        let mut stmt = conn.prepare_cached(
            "SELECT substr(created_at, 1, 10) AS day, status, COUNT(*) FROM tickets
             WHERE created_at >= ?1 GROUP BY day, status ORDER BY day",
        )?;
        let daily = stmt
            .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let (total, processed, rated, rating_sum): (i64, i64, i64, i64) = conn.query_row(
            "SELECT COUNT(*), COUNT(analysis), COUNT(rating), COALESCE(SUM(rating), 0) FROM tickets",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let escalated: i64 = conn.query_row(
            "SELECT COUNT(DISTINCT ticket_id) FROM events WHERE kind = 'escalated'",
            [],
            |r| r.get(0),
        )?;
        Ok(DashboardStats {
            by_category,
            by_priority,
            daily,
            total,
            processed,
            escalated,
            rated,
            average_rating: (rated > 0).then(|| rating_sum as f64 / rated as f64),
        })
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    /// Forgets idempotency keys older than `cutoff` (an RFC 3339 time).
    pub fn prune_idempotency_keys(&self, cutoff: &str) -> Result<usize, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?1",
                [cutoff],
            )?)
        })
    }

    /// Deletes or anonymises tickets resolved before `cutoff` (RFC 3339).
    /// Anonymising removes the customer's words and the AI's answer, voids
    /// the tracking link and keeps category, priority, dates and stars.
    pub fn apply_retention(
        &self,
        cutoff: &str,
        mode: crate::config::RetentionMode,
    ) -> Result<usize, StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids: Vec<i64> = tx
                .prepare(
                    "SELECT id FROM tickets WHERE status = 'Resolved' AND updated_at < ?1
                     AND anonymised_at IS NULL",
                )?
                .query_map([cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                // Outgoing copies go too: mails hold the address and the
                // words, webhook bodies the subject and messages.
                tx.execute("DELETE FROM mail_outbox WHERE ticket_id = ?1", [id])?;
                tx.execute("DELETE FROM webhook_deliveries WHERE ticket_id = ?1", [id])?;
                tx.execute("DELETE FROM webhook_messages WHERE ticket_id = ?1", [id])?;
                match mode {
                    crate::config::RetentionMode::Delete => {
                        tx.execute("DELETE FROM tickets WHERE id = ?1", [id])?;
                    }
                    crate::config::RetentionMode::Anonymise => {
                        let token = new_token();
                        tx.execute(
                            "UPDATE tickets SET subject = '[removed]', description = '[removed]',
                                 rating_comment = NULL, analysis = NULL, email = NULL, token = ?2,
                                 token_prefix = ?3, anonymised_at = ?4
                             WHERE id = ?1",
                            params![id, token, &token[..TOKEN_PREFIX_LEN], now],
                        )?;
                        tx.execute("UPDATE events SET detail = '' WHERE ticket_id = ?1", [id])?;
                        tx.execute("DELETE FROM messages WHERE ticket_id = ?1", [id])?;
                    }
                }
            }
            tx.commit()?;
            Ok(ids.len())
        })
    }

    /// A consistent copy of the live database in `to` (SQLite's `VACUUM
    /// INTO`, one read transaction), checked with `integrity_check` before it
    /// is moved into place. An existing `to` is never overwritten.
    pub fn backup_to(&self, to: &Path) -> Result<BackupReport, StoreError> {
        match self.reader().sqlite() {
            Some(c) => backup(c, to),
            None => Err(StoreError::Backup(
                "a PostgreSQL database is backed up with pg_dump".into(),
            )),
        }
    }
}

/// Backs up the database behind `conn` into `to`; see [`Store::backup_to`].
pub fn backup(conn: &rusqlite::Connection, to: &Path) -> Result<BackupReport, StoreError> {
    let fail = |m: String| StoreError::Backup(m);
    if to.exists() {
        return Err(fail(format!("{} exists; choose a new file", to.display())));
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let partial_str = partial
        .to_str()
        .ok_or_else(|| fail("the backup path must be valid UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [partial_str])?;
    let check = (|| -> Result<BackupReport, StoreError> {
        let copy = rusqlite::Connection::open_with_flags(
            &partial,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let integrity: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if integrity != "ok" {
            return Err(fail(format!(
                "the copy failed its integrity check: {integrity}"
            )));
        }
        let (tickets, events) = copy.query_row(
            "SELECT (SELECT COUNT(*) FROM tickets), (SELECT COUNT(*) FROM events)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(BackupReport {
            path: to.display().to_string(),
            bytes: std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0),
            tickets,
            events,
            schema_version: copy
                .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
                .try_into()
                .unwrap_or(0),
            integrity,
        })
    })();
    match check {
        Ok(report) => {
            std::fs::rename(&partial, to)
                .map_err(|e| fail(format!("cannot move the copy into place: {e}")))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 48);
        assert_ne!(a, new_token());
    }
}
