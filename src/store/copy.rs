//! `smart-support db copy`: everything in one database into another, in
//! either direction between SQLite and PostgreSQL (the move a team makes
//! when it outgrows one machine, or back for a laptop).
//!
//! Both sides are opened as stores, so both are migrated to the same
//! schema version; the rows then move table by table, parents before
//! children, keeping every id (tracking tokens, event ids and the links
//! between rows stay valid). The source is read in one snapshot and the
//! destination written in one transaction: a copy that fails leaves the
//! destination as it was. The copy refuses a destination that holds
//! tickets or staff accounts, and afterwards compares each table's count
//! with the source's.
//!
//! What is not copied is the state of the processes using a database:
//! node presence, leases on turns, the write probe's scratch table. A
//! ticket held by a node of the old database is freed by the first worker
//! on the new one (its owner is not a live node there).

use serde::Serialize;

use super::sql::{AnyValue, Backend, Connection, TransactionBehavior, params_from_iter};
use super::{Store, StoreError};

/// Every table that holds data, parents before children. A table a later
/// change adds must be named here or in `NOT_COPIED`: the copy (and its
/// test) refuses a table it does not know.
pub const COPIED: &[&str] = &[
    "settings",
    "users",
    "tickets",
    "events",
    "history",
    "messages",
    "sla_clocks",
    "idempotency_keys",
    "kb_articles",
    "canned_replies",
    "webhook_messages",
    "webhook_deliveries",
    "webhook_endpoints",
    "mail_outbox",
];

/// Tables of the processes using the database, and the schema's own.
pub const NOT_COPIED: &[&str] = &["nodes", "leases", "health_probe", "schema_version"];

/// Rows read and written at a time (memory stays flat on big tables).
const BATCH: i64 = 500;

/// What `copy_to` moved: rows per table, in copy order.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub tables: Vec<(String, i64)>,
    pub rows: i64,
}

impl Store {
    /// Copies every row of this database into `to` (see the module docs).
    pub fn copy_to(&self, to: &Store) -> Result<CopyReport, StoreError> {
        let mut src = self.reader();
        let mut dst = to.conn();
        let plan = plan(&src, &dst)?;
        let read = snapshot(&mut src)?;
        let write = dst.transaction_with_behavior(TransactionBehavior::Immediate)?;
        refuse_data(&write)?;
        for table in COPIED.iter().rev() {
            write.execute(&format!("DELETE FROM {table}"), [])?;
        }
        let mut tables = Vec::new();
        for (table, columns) in &plan {
            let copied = copy_table(&read, &write, table, columns)?;
            let there = count(&write, table)?;
            let here = count(&read, table)?;
            if copied != here || there != here {
                return Err(StoreError::Copy(format!(
                    "{table}: {here} rows in the source, {copied} copied, {there} in the destination"
                )));
            }
            tables.push((table.to_string(), copied));
        }
        if write.backend() == Backend::Postgres {
            restart_identities(&write, &plan)?;
        }
        write.commit()?;
        read.commit()?;
        Ok(CopyReport {
            from: self.path().display().to_string(),
            to: to.path().display().to_string(),
            rows: tables.iter().map(|(_, n)| n).sum(),
            tables,
        })
    }
}

/// Each copied table with its columns, once both sides are known to have
/// the same tables and columns.
fn plan(
    src: &Connection,
    dst: &Connection,
) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
    for conn in [src, dst] {
        let unknown: Vec<String> = tables(conn)?
            .into_iter()
            .filter(|t| !COPIED.contains(&t.as_str()) && !NOT_COPIED.contains(&t.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(StoreError::Copy(format!(
                "the {} database has tables the copy does not know: {}",
                conn.backend().as_str(),
                unknown.join(", ")
            )));
        }
    }
    COPIED
        .iter()
        .map(|&table| {
            let (mut a, mut b) = (columns(src, table)?, columns(dst, table)?);
            let order = a.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(StoreError::Copy(format!(
                    "the table {table} differs: [{}] in the source, [{}] in the destination",
                    a.join(", "),
                    b.join(", ")
                )));
            }
            Ok((table, order))
        })
        .collect()
}

/// The tables of the database (not SQLite's own, nor full-text indexes).
fn tables(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let sql = match conn.backend() {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master t WHERE type = 'table'
               AND name NOT LIKE 'sqlite_%'
               AND NOT EXISTS (SELECT 1 FROM sqlite_master v
                               WHERE v.type = 'table' AND v.sql LIKE 'CREATE VIRTUAL TABLE%'
                                 AND (t.name = v.name OR t.name LIKE v.name || '_%'))
             ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
             ORDER BY 1"
        }
    };
    let mut stmt = conn.prepare(sql)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// A table's stored columns in order (PostgreSQL's generated ones left
/// out: they are computed again).
fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let sql = match conn.backend() {
        Backend::Sqlite => "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1
               AND is_generated = 'NEVER'
             ORDER BY ordinal_position"
        }
    };
    let mut stmt = conn.prepare(sql)?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// A read transaction that sees one moment of the database throughout.
fn snapshot(conn: &mut Connection) -> Result<super::sql::Transaction<'_>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    if tx.backend() == Backend::Postgres {
        tx.execute_batch("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    }
    Ok(tx)
}

/// The copy fills an empty database; one with tickets or accounts is
/// someone's data.
fn refuse_data(conn: &Connection) -> Result<(), StoreError> {
    let (tickets, users) = (count(conn, "tickets")?, count(conn, "users")?);
    if tickets > 0 || users > 0 {
        return Err(StoreError::Copy(format!(
            "the destination already holds {tickets} tickets and {users} staff accounts; \
             copy into a new, empty database"
        )));
    }
    Ok(())
}

fn count(conn: &Connection, table: &str) -> Result<i64, StoreError> {
    Ok(conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
}

/// Moves one table's rows in key order, `BATCH` at a time; returns how many.
fn copy_table(
    read: &Connection,
    write: &Connection,
    table: &str,
    columns: &[String],
) -> Result<i64, StoreError> {
    let list = columns.join(", ");
    // Every table's key is its first column, or its first two (an SLA
    // clock: ticket and target): a total order, so pages neither skip nor
    // repeat a row.
    let key = columns
        .iter()
        .take(2)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!("SELECT {list} FROM {table} ORDER BY {key} LIMIT ?1 OFFSET ?2");
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    // Ids are kept: PostgreSQL's always-generated identities must be told.
    let overriding = match write.backend() {
        Backend::Postgres => " OVERRIDING SYSTEM VALUE",
        Backend::Sqlite => "",
    };
    let insert = format!(
        "INSERT INTO {table} ({list}){overriding} VALUES ({})",
        marks.join(", ")
    );
    let mut copied = 0;
    loop {
        let rows: Vec<Vec<AnyValue>> = {
            let mut stmt = read.prepare(&select)?;
            stmt.query_map([BATCH, copied], |r| {
                (0..columns.len())
                    .map(|i| r.get::<_, AnyValue>(i))
                    .collect()
            })?
            .collect::<Result<_, _>>()?
        };
        for row in &rows {
            write.execute(&insert, params_from_iter(row))?;
        }
        copied += rows.len() as i64;
        if (rows.len() as i64) < BATCH {
            return Ok(copied);
        }
    }
}

/// PostgreSQL's identity sequences continue after the copied ids.
fn restart_identities(
    conn: &Connection,
    plan: &[(&'static str, Vec<String>)],
) -> Result<(), StoreError> {
    for (table, _) in plan {
        let identity: Option<String> = conn
            .prepare(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ?1 AND is_identity = 'YES'",
            )?
            .query_map([*table], |r| r.get::<_, String>(0))?
            .next()
            .transpose()?;
        if let Some(col) = identity {
            conn.execute_batch(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{col}'),
                               COALESCE((SELECT MAX({col}) FROM {table}), 0) + 1, false)"
            ))?;
        }
    }
    Ok(())
}

impl Store {
    /// Every copied table's rows as text, columns by name and rows sorted,
    /// so that two databases holding the same data compare equal whatever
    /// their backends (the copy's tests).
    #[doc(hidden)]
    pub fn dump_for_test(&self) -> Result<Vec<TableDump>, StoreError> {
        let conn = self.reader();
        COPIED
            .iter()
            .map(|&table| {
                let mut cols = columns(&conn, table)?;
                cols.sort();
                let mut stmt = conn.prepare(&format!("SELECT {} FROM {table}", cols.join(", ")))?;
                let mut rows: Vec<Vec<String>> = stmt
                    .query_map([], |r| {
                        (0..cols.len())
                            .map(|i| r.get::<_, AnyValue>(i).map(|v| shown(&v)))
                            .collect()
                    })?
                    .collect::<Result<_, _>>()?;
                rows.sort();
                let rows = rows
                    .into_iter()
                    .map(|r| {
                        cols.iter()
                            .zip(r)
                            .map(|(c, v)| format!("{c}={v}"))
                            .collect()
                    })
                    .collect();
                Ok((table.to_string(), rows))
            })
            .collect()
    }
}

/// A table's name and its rows, each `column=value` (`dump_for_test`).
pub type TableDump = (String, Vec<Vec<String>>);

fn shown(v: &AnyValue) -> String {
    use super::sql::PgValue;
    match &v.0 {
        PgValue::Null => "NULL".into(),
        PgValue::Int(i) => i.to_string(),
        PgValue::Bool(b) => i64::from(*b).to_string(),
        PgValue::Real(f) => format!("{f:?}"),
        PgValue::Text(t) => format!("{t:?}"),
        PgValue::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}
