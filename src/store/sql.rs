//! One SQL interface over the two backends: SQLite (rusqlite, in process)
//! and PostgreSQL (tokio-postgres on the store's own runtime). The store's
//! queries are written once, in the shape rusqlite gave them (`execute`,
//! `query_row`, `prepare(..).query_map`, `params![..]`, `optional()`), and
//! run on either; where the dialects differ the store asks
//! [`Connection::backend`] and says each form.
//!
//! Why not a trait with two implementations of every store method: the
//! store has a hundred methods whose SQL is the same on both engines once
//! placeholders are renumbered (`?1` → `$1`), so one body each, tested on
//! both, is what keeps the two from drifting apart.
//!
//! PostgreSQL calls block the calling thread like SQLite's do (the store is
//! synchronous); each one runs on the store's runtime, so they work from any
//! thread, async or not. A write transaction takes one advisory lock for the
//! whole database, as SQLite's `BEGIN IMMEDIATE` takes its write lock:
//! writers run one at a time across every node, so a transaction's reads
//! are still true when it commits, and the change feed's ids grow in commit
//! order.

use std::sync::Arc;

use bytes::BytesMut;

use super::pg_tls::Target;
use tokio_postgres::types::{IsNull, ToSql as PgToSql, Type};

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A query failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("query returned no rows")]
    NoRows,
    #[error("column {column}: {detail}")]
    Column { column: usize, detail: String },
    #[error("the database connection is gone")]
    Gone,
    #[error("the database URL: {0}")]
    Url(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A PostgreSQL error with the server's words (its code, message, detail).
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(": ");
                m.push_str(d);
            }
            m
        }
        // tokio-postgres names only the kind ("error connecting to
        // server"); the reason is its source.
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                m.push_str(": ");
                m.push_str(&cause.to_string());
                source = cause.source();
            }
            m
        }
    }
}

/// `Ok(None)` for a query that found no row.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A value bound to a placeholder, as PostgreSQL gets it: encoded as the
/// type the server expects there (an integer may fill a BIGINT, INTEGER or
/// BOOLEAN slot; text a TEXT or unknown one).
#[derive(Debug, Clone)]
pub enum PgValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

impl PgToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let int = |v: i64, out: &mut BytesMut| -> std::result::Result<IsNull, _> {
            match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                _ => v.to_string().as_str().to_sql(&Type::TEXT, out),
            }
        };
        match self {
            PgValue::Null => Ok(IsNull::Yes),
            PgValue::Int(v) => int(*v, out),
            PgValue::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                _ => int(i64::from(*b), out),
            },
            PgValue::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(&Type::FLOAT8, out),
            },
            PgValue::Text(s) => s.as_str().to_sql(&Type::TEXT, out),
            PgValue::Bytes(b) => b.as_slice().to_sql(&Type::BYTEA, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A Rust value that binds to a placeholder on either backend.
pub trait ToValue: rusqlite::ToSql {
    fn to_pg(&self) -> PgValue;
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_pg(&self) -> PgValue {
                PgValue::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_value!(i64, i32, u32, u16, u8);

impl ToValue for bool {
    fn to_pg(&self) -> PgValue {
        PgValue::Bool(*self)
    }
}
impl ToValue for f64 {
    fn to_pg(&self) -> PgValue {
        PgValue::Real(*self)
    }
}
impl ToValue for String {
    fn to_pg(&self) -> PgValue {
        PgValue::Text(self.clone())
    }
}
impl ToValue for str {
    fn to_pg(&self) -> PgValue {
        PgValue::Text(self.to_string())
    }
}
impl ToValue for Vec<u8> {
    fn to_pg(&self) -> PgValue {
        PgValue::Bytes(self.clone())
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_pg(&self) -> PgValue {
        self.as_ref().map_or(PgValue::Null, ToValue::to_pg)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_pg(&self) -> PgValue {
        (**self).to_pg()
    }
}
impl<T: ToValue + ?Sized> ToValue for Box<T> {
    fn to_pg(&self) -> PgValue {
        (**self).to_pg()
    }
}

/// A query's parameters: `params![a, b]`, `[a]`, `[]` or
/// `params_from_iter(values)`.
pub trait Params {
    fn values(&self) -> Vec<&dyn ToValue>;
}

impl Params for [&dyn ToValue; 0] {
    fn values(&self) -> Vec<&dyn ToValue> {
        Vec::new()
    }
}

impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<&dyn ToValue> {
        self.to_vec()
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(&self) -> Vec<&dyn ToValue> {
                self.iter().map(|v| v as &dyn ToValue).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

/// Parameters from an iterator of values (a query built at run time).
pub struct ParamsFromIter<'a, T>(&'a [T]);

pub fn params_from_iter<T: ToValue>(values: &[T]) -> ParamsFromIter<'_, T> {
    ParamsFromIter(values)
}

impl<T: ToValue> Params for ParamsFromIter<'_, T> {
    fn values(&self) -> Vec<&dyn ToValue> {
        self.0.iter().map(|v| v as &dyn ToValue).collect()
    }
}

/// `params![a, b, c]`: parameters of different types.
#[macro_export]
macro_rules! sql_params {
    () => {
        &[] as &[&dyn $crate::store::sql::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::sql::ToValue),+] as &[&dyn $crate::store::sql::ToValue]
    };
}
pub use crate::sql_params as params;

/// A value read from a column on either backend.
pub trait FromValue: rusqlite::types::FromSql + Sized {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String>;
}

/// Column `i`'s type as the server sent it.
fn column_type(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Type, String> {
    Ok(row
        .columns()
        .get(i)
        .ok_or("no such column")?
        .type_()
        .clone())
}

/// Whether column `i` is NULL, whatever its type.
fn is_null(row: &tokio_postgres::Row, i: usize) -> std::result::Result<bool, String> {
    Ok(row
        .try_get::<_, Option<Raw>>(i)
        .map_err(|e| e.to_string())?
        .is_none())
}

fn pg_i64(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Option<i64>, String> {
    let ty = column_type(row, i)?;
    let e = |e: tokio_postgres::Error| e.to_string();
    Ok(match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?,
        Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(e)?.map(i64::from),
        Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(e)?.map(i64::from),
        Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(e)?.map(i64::from),
        other => return Err(format!("expected an integer, found {other}")),
    })
}

impl FromValue for i64 {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        pg_i64(row, i)?.ok_or_else(|| "NULL where an integer was expected".into())
    }
}
/// The narrower integers: read as `i64`, refused when out of range.
macro_rules! narrow_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
                <$t>::try_from(i64::from_pg(row, i)?).map_err(|e| e.to_string())
            }
        }
    )*};
}
narrow_from_value!(i32, u32, u8, u16);
impl FromValue for bool {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        Ok(i64::from_pg(row, i)? != 0)
    }
}
impl FromValue for f64 {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        let ty = column_type(row, i)?;
        let e = |e: tokio_postgres::Error| e.to_string();
        match ty {
            Type::FLOAT8 => row.try_get::<_, f64>(i).map_err(e),
            Type::FLOAT4 => row.try_get::<_, f32>(i).map(f64::from).map_err(e),
            _ => Ok(i64::from_pg(row, i)? as f64),
        }
    }
}
impl FromValue for String {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        row.try_get::<_, String>(i).map_err(|e| e.to_string())
    }
}
impl FromValue for Vec<u8> {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        row.try_get::<_, Vec<u8>>(i).map_err(|e| e.to_string())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        if is_null(row, i)? {
            Ok(None)
        } else {
            T::from_pg(row, i).map(Some)
        }
    }
}

/// Whatever a column holds, as it is (`db copy` moves rows between the
/// backends without knowing their types).
#[derive(Debug, Clone)]
pub struct AnyValue(pub PgValue);

impl rusqlite::types::FromSql for AnyValue {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::ValueRef;
        Ok(AnyValue(match v {
            ValueRef::Null => PgValue::Null,
            ValueRef::Integer(i) => PgValue::Int(i),
            ValueRef::Real(f) => PgValue::Real(f),
            ValueRef::Text(_) => PgValue::Text(v.as_str()?.to_string()),
            ValueRef::Blob(b) => PgValue::Bytes(b.to_vec()),
        }))
    }
}

impl rusqlite::ToSql for AnyValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match &self.0 {
            PgValue::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            PgValue::Int(i) => ToSqlOutput::from(*i),
            PgValue::Real(f) => ToSqlOutput::from(*f),
            PgValue::Text(t) => ToSqlOutput::from(t.as_str()),
            PgValue::Bool(b) => ToSqlOutput::from(i64::from(*b)),
            PgValue::Bytes(b) => ToSqlOutput::from(b.as_slice()),
        })
    }
}

impl ToValue for AnyValue {
    fn to_pg(&self) -> PgValue {
        self.0.clone()
    }
}

impl FromValue for AnyValue {
    fn from_pg(row: &tokio_postgres::Row, i: usize) -> std::result::Result<Self, String> {
        if is_null(row, i)? {
            return Ok(AnyValue(PgValue::Null));
        }
        let ty = column_type(row, i)?;
        Ok(AnyValue(match ty {
            Type::INT8 | Type::INT4 | Type::INT2 => PgValue::Int(i64::from_pg(row, i)?),
            Type::BOOL => PgValue::Bool(bool::from_pg(row, i)?),
            Type::FLOAT8 | Type::FLOAT4 => PgValue::Real(f64::from_pg(row, i)?),
            Type::BYTEA => PgValue::Bytes(Vec::<u8>::from_pg(row, i)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                PgValue::Text(String::from_pg(row, i)?)
            }
            other => return Err(format!("cannot copy a column of type {other}")),
        }))
    }
}

/// Any column's raw bytes (to tell NULL apart).
struct Raw;

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &Type,
        _: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A column's position (an integer literal or a `usize`).
pub trait ColumnIndex {
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl ColumnIndex for i32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

/// One row of a result.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `i` (0-based) as `T`; the first type parameter is there so
    /// that rusqlite's `get::<_, T>` reads the same.
    pub fn get<I: ColumnIndex, T: FromValue>(&self, i: I) -> Result<T> {
        let i = i.index();
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => {
                T::from_pg(r, i).map_err(|detail| Error::Column { column: i, detail })
            }
        }
    }
}

/// A PostgreSQL session, driven on the store's runtime; it connects again
/// when the server closed it (a restart), before the next query.
pub struct PgConn {
    target: Arc<Target>,
    client: std::sync::Mutex<Arc<tokio_postgres::Client>>,
    rt: tokio::runtime::Handle,
}

/// A session's connection half, plain or encrypted: what reads the
/// server's messages.
trait Session: Send {
    fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<
        Option<std::result::Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>,
    >;
}

impl<S, T> Session for tokio_postgres::Connection<S, T>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<
        Option<std::result::Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>,
    > {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

/// Opens a session to `target`, with TLS when its URL asked for it.
async fn open_session(
    target: &Target,
) -> std::result::Result<(tokio_postgres::Client, Box<dyn Session>), tokio_postgres::Error> {
    Ok(match &target.tls {
        None => {
            let (c, s) = tokio_postgres::connect(&target.url, tokio_postgres::NoTls).await?;
            (c, Box::new(s))
        }
        Some(config) => {
            let tls = super::pg_tls::Rustls(config.clone());
            let (c, s) = tokio_postgres::connect(&target.url, tls).await?;
            (c, Box::new(s))
        }
    })
}

/// The server's next message (`None` once the session has ended).
async fn next_message(
    session: &mut Box<dyn Session>,
) -> Option<std::result::Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>> {
    std::future::poll_fn(|cx| session.poll_message(cx)).await
}

async fn pg_connect(
    target: Arc<Target>,
    rt: tokio::runtime::Handle,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, mut session) = open_session(&target).await?;
    rt.spawn(async move {
        while let Some(message) = next_message(&mut session).await {
            if let Err(e) = message {
                tracing::warn!(error = %pg_message(&e), "a PostgreSQL connection ended");
                break;
            }
        }
    });
    Ok(client)
}

impl PgConn {
    /// Connects to `url` on `rt` (which the caller keeps alive).
    pub fn connect(url: &str, rt: &tokio::runtime::Handle) -> Result<PgConn> {
        let target = Arc::new(Target::parse(url).map_err(Error::Url)?);
        let client = block(rt, pg_connect(target.clone(), rt.clone()))??;
        Ok(PgConn {
            target,
            client: std::sync::Mutex::new(Arc::new(client)),
            rt: rt.clone(),
        })
    }

    /// The session, connected again first when the server closed it.
    fn client(&self) -> Result<Arc<tokio_postgres::Client>> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_closed() {
            let fresh = block(&self.rt, pg_connect(self.target.clone(), self.rt.clone()))??;
            *c = Arc::new(fresh);
            tracing::info!("connected to PostgreSQL again");
        }
        Ok(c.clone())
    }

    fn query(&self, sql: &str, params: &dyn Params) -> Result<Vec<tokio_postgres::Row>> {
        let sql = pg_sql(sql);
        let values: Vec<PgValue> = params.values().iter().map(|v| v.to_pg()).collect();
        let c = self.client()?;
        block(&self.rt, async move {
            let refs: Vec<&(dyn PgToSql + Sync)> =
                values.iter().map(|v| v as &(dyn PgToSql + Sync)).collect();
            c.query(&sql, &refs).await
        })?
        .map_err(Error::from)
    }

    fn execute(&self, sql: &str, params: &dyn Params) -> Result<usize> {
        let sql = pg_sql(sql);
        let values: Vec<PgValue> = params.values().iter().map(|v| v.to_pg()).collect();
        let c = self.client()?;
        let n = block(&self.rt, async move {
            let refs: Vec<&(dyn PgToSql + Sync)> =
                values.iter().map(|v| v as &(dyn PgToSql + Sync)).collect();
            c.execute(&sql, &refs).await
        })??;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn batch(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        let c = self.client()?;
        Ok(block(
            &self.rt,
            async move { c.batch_execute(&sql).await },
        )??)
    }
}

/// Listens on `channel` in a session of its own on `rt` (until `rt` shuts
/// down): `heard` is raised for each notification, and after each
/// (re)connection, since what was announced while the session was away is
/// lost; a session that ends is opened again a second later.
pub fn pg_listen(
    url: &str,
    channel: &'static str,
    rt: &tokio::runtime::Handle,
    heard: Arc<tokio::sync::Notify>,
) {
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "not listening for changes (the feed polls)");
            return;
        }
    };
    rt.spawn(async move {
        let mut failing = false;
        loop {
            match listen_once(&target, channel, &heard).await {
                Ok(ended) => {
                    failing = false;
                    tracing::warn!(reason = %ended, "the session listening for changes ended; connecting again");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "not listening for changes (the feed polls meanwhile); trying again");
                }
                Err(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// One listening session: why it ended once it was listening, or why it
/// could not start.
async fn listen_once(
    target: &Target,
    channel: &str,
    heard: &Arc<tokio::sync::Notify>,
) -> std::result::Result<String, String> {
    let (client, mut session) = open_session(target).await.map_err(|e| pg_message(&e))?;
    let h = heard.clone();
    let driver = tokio::spawn(async move {
        loop {
            match next_message(&mut session).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => h.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(pg_message(&e)),
                None => return Ok(()),
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
        driver.abort();
        return Err(pg_message(&e));
    }
    heard.notify_one();
    let ended = match driver.await {
        Ok(Ok(())) => "the server closed it".to_string(),
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    };
    drop(client);
    Ok(ended)
}

/// Runs `fut` on `rt` and waits for it on this thread (any thread: the
/// wait is a channel, not a runtime's `block_on`).
fn block<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| Error::Gone)
}

/// A query in SQLite's dialect as PostgreSQL takes it: numbered
/// placeholders (`?1` → `$1`) and case-blind comparison and order
/// (`a = ?1 COLLATE NOCASE` → `lower(a) = lower($1)`; both fold ASCII only).
pub fn pg_sql(sql: &str) -> String {
    nocase(&placeholders(sql))
}

const NOCASE: &str = " COLLATE NOCASE";

fn nocase(sql: &str) -> String {
    let mut out = sql.to_string();
    while let Some(at) = out.find(NOCASE) {
        let (head, tail) = out.split_at(at);
        let tail = &tail[NOCASE.len()..];
        let start = head
            .rfind(|c: char| c.is_whitespace() || c == '(' || c == ',')
            .map_or(0, |i| i + 1);
        let (before, operand) = head.split_at(start);
        let mut before = before.to_string();
        // `x = y COLLATE NOCASE` compares case-blind: both sides fold.
        let trimmed = before.trim_end();
        if let Some(left) = trimmed.strip_suffix('=') {
            let left = left.trim_end();
            let l_start = left
                .rfind(|c: char| c.is_whitespace() || c == '(' || c == ',')
                .map_or(0, |i| i + 1);
            before = format!("{}lower({}) = ", &left[..l_start], &left[l_start..]);
        }
        out = format!("{before}lower({operand}){tail}");
    }
    out
}

fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// A connection to either backend.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(PgConn),
}

/// How a transaction starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBehavior {
    /// Reads only, or writes that need no lock taken at the start.
    Deferred,
    /// Takes the database's write lock at once (SQLite `BEGIN IMMEDIATE`;
    /// PostgreSQL: the store's advisory lock).
    Immediate,
}

/// The advisory lock every PostgreSQL write transaction takes ("SMSS").
const WRITE_LOCK: i64 = 0x534d_5353;

impl Connection {
    pub fn backend(&self) -> Backend {
        match self {
            Connection::Sqlite(_) => Backend::Sqlite,
            Connection::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, backup).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Connection::Sqlite(c) => Some(c),
            Connection::Postgres(_) => None,
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        match self {
            Connection::Sqlite(c) => {
                let values = params.values();
                Ok(c.execute(sql, rusqlite::params_from_iter(values.iter().map(lite)))?)
            }
            Connection::Postgres(c) => c.execute(sql, &params),
        }
    }

    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Connection::Postgres(c) => c.batch(sql),
        }
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T> {
        match self {
            Connection::Sqlite(c) => {
                let values = params.values();
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(values.iter().map(lite)))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(Error::NoRows),
                }
            }
            Connection::Postgres(c) => {
                let rows = c.query(sql, &params)?;
                match rows.first() {
                    Some(r) => f(&Row::Postgres(r)),
                    None => Err(Error::NoRows),
                }
            }
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_string(),
        })
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    /// Starts a transaction; it rolls back when dropped uncommitted.
    pub fn transaction_with_behavior(
        &mut self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>> {
        match (&*self, behavior) {
            (Connection::Sqlite(_), TransactionBehavior::Immediate) => {
                self.execute_batch("BEGIN IMMEDIATE")?
            }
            (Connection::Sqlite(_), TransactionBehavior::Deferred) => {
                self.execute_batch("BEGIN DEFERRED")?
            }
            (Connection::Postgres(_), TransactionBehavior::Immediate) => {
                self.execute_batch("BEGIN")?;
                if let Err(e) = self.execute("SELECT pg_advisory_xact_lock(?1)", [WRITE_LOCK]) {
                    let _ = self.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            (Connection::Postgres(_), TransactionBehavior::Deferred) => {
                self.execute_batch("BEGIN")?
            }
        }
        Ok(Transaction {
            conn: self,
            done: false,
            announce: std::cell::Cell::new(None),
        })
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.transaction_with_behavior(TransactionBehavior::Deferred)
    }
}

fn lite<'a>(v: &'a &dyn ToValue) -> &'a dyn rusqlite::ToSql {
    *v
}

/// A prepared query (on SQLite, from the connection's statement cache).
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    /// The first row through `f` (`Error::NoRows` when there is none).
    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> Result<T> {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Every row through `f`, read at once.
    pub fn query_map<T, P: Params, F: FnMut(&Row<'_>) -> Result<T>>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let out: Vec<Result<T>> = match self.conn {
            Connection::Sqlite(c) => {
                let values = params.values();
                let mut st = c.prepare_cached(&self.sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(values.iter().map(lite)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r)));
                }
                out
            }
            Connection::Postgres(c) => c
                .query(&self.sql, &params)?
                .iter()
                .map(|r| f(&Row::Postgres(r)))
                .collect(),
        };
        Ok(out.into_iter())
    }
}

/// A transaction on a connection: every query of the connection, and
/// `commit`. Dropped uncommitted, it rolls back.
pub struct Transaction<'c> {
    conn: &'c mut Connection,
    done: bool,
    /// A PostgreSQL channel told at commit (`announce`).
    announce: std::cell::Cell<Option<&'static str>>,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        if let (Some(channel), Backend::Postgres) = (self.announce.get(), self.conn.backend()) {
            // Delivered with the commit, once however often it was asked;
            // a failure here still rolls back (on drop).
            self.conn.execute_batch(&format!("NOTIFY {channel}"))?;
        }
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }

    /// Has PostgreSQL tell the sessions listening on `channel` when this
    /// transaction commits (nothing on SQLite).
    pub fn announce(&self, channel: &'static str) {
        self.announce.set(Some(channel));
    }

    pub fn rollback(mut self) -> Result<()> {
        self.done = true;
        self.conn.execute_batch("ROLLBACK")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_blind_comparisons_and_orders_fold_both_sides() {
        assert_eq!(
            pg_sql("SELECT name FROM users WHERE u.name = ?1 COLLATE NOCASE AND active = 1"),
            "SELECT name FROM users WHERE lower(u.name) = lower($1) AND active = 1"
        );
        assert_eq!(
            pg_sql("SELECT 1 FROM kb ORDER BY title COLLATE NOCASE, slug"),
            "SELECT 1 FROM kb ORDER BY lower(title), slug"
        );
    }

    #[test]
    fn placeholders_are_renumbered_outside_quotes_only() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
    }
}
