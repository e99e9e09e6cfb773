//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.
//! Never edit a released step: add a new one.

use super::sql::{Backend, Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// Each entry moves the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: tickets and their event log.
    "CREATE TABLE tickets (
        id INTEGER PRIMARY KEY,
        token TEXT NOT NULL UNIQUE,
        token_prefix TEXT NOT NULL,
        subject TEXT NOT NULL,
        description TEXT NOT NULL,
        status TEXT NOT NULL,
        processing TEXT NOT NULL DEFAULT 'accepted'
            CHECK (processing IN ('accepted', 'processing', 'done')),
        pipeline_runs INTEGER NOT NULL DEFAULT 0,
        category TEXT,
        priority TEXT,
        sentiment TEXT,
        risk TEXT,
        analysis TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX tickets_token_prefix ON tickets(token_prefix);
    CREATE INDEX tickets_processing ON tickets(processing, id);
    CREATE INDEX tickets_created ON tickets(created_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL
    );
    CREATE INDEX events_ticket ON events(ticket_id, id);",
    // 2: full-text search over subject and description.
    "CREATE VIRTUAL TABLE tickets_fts USING fts5(
        subject, description, content='tickets', content_rowid='id', tokenize='unicode61'
    );
    CREATE TRIGGER tickets_fts_insert AFTER INSERT ON tickets BEGIN
        INSERT INTO tickets_fts(rowid, subject, description)
        VALUES (new.id, new.subject, new.description);
    END;
    CREATE TRIGGER tickets_fts_delete AFTER DELETE ON tickets BEGIN
        INSERT INTO tickets_fts(tickets_fts, rowid, subject, description)
        VALUES ('delete', old.id, old.subject, old.description);
    END;
    CREATE TRIGGER tickets_fts_update AFTER UPDATE OF subject, description ON tickets BEGIN
        INSERT INTO tickets_fts(tickets_fts, rowid, subject, description)
        VALUES ('delete', old.id, old.subject, old.description);
        INSERT INTO tickets_fts(rowid, subject, description)
        VALUES (new.id, new.subject, new.description);
    END;
    INSERT INTO tickets_fts(tickets_fts) VALUES ('rebuild');",
    // 3: ratings, filter indexes and settings (the admin password hash).
    "ALTER TABLE tickets ADD COLUMN rating INTEGER CHECK (rating BETWEEN 1 AND 5);
    ALTER TABLE tickets ADD COLUMN rating_comment TEXT;
    CREATE INDEX tickets_status ON tickets(status);
    CREATE INDEX tickets_category ON tickets(category);
    CREATE INDEX tickets_priority ON tickets(priority);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 4: idempotent intake, retention, and one rating event per ticket (a new
    // rating replaces the old one instead of growing the history).
    "CREATE TABLE idempotency_keys (
        key TEXT PRIMARY KEY,
        ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
    CREATE INDEX idempotency_keys_ticket ON idempotency_keys(ticket_id);
    ALTER TABLE tickets ADD COLUMN anonymised_at TEXT;
    CREATE TABLE health_probe (id INTEGER PRIMARY KEY, filler BLOB NOT NULL);
    CREATE INDEX tickets_retention ON tickets(status, updated_at);
    DELETE FROM events WHERE kind = 'rated' AND id NOT IN
        (SELECT MAX(id) FROM events WHERE kind = 'rated' GROUP BY ticket_id);",
    // 5: staff accounts; the single admin password becomes the user `admin`.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'agent')),
        password_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    INSERT INTO users (name, role, password_hash, created_at, updated_at)
        SELECT 'admin', 'admin', value, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        FROM settings WHERE key = 'admin_password_hash';
    DELETE FROM settings WHERE key = 'admin_password_hash';",
    // 6: the conversation, the change history and the assignee.
    "CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        author_kind TEXT NOT NULL CHECK (author_kind IN ('customer', 'staff', 'ai', 'system')),
        author_name TEXT,
        internal INTEGER NOT NULL DEFAULT 0 CHECK (internal IN (0, 1)),
        ai_assisted INTEGER NOT NULL DEFAULT 0 CHECK (ai_assisted IN (0, 1)),
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX messages_ticket ON messages(ticket_id, id);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        field TEXT NOT NULL,
        from_value TEXT,
        to_value TEXT,
        by TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX history_ticket ON history(ticket_id, id);
    ALTER TABLE tickets ADD COLUMN assignee TEXT;
    CREATE INDEX tickets_assignee ON tickets(assignee);",
    // 7: canned replies, per category (NULL: for every category).
    "CREATE TABLE canned_replies (
        id INTEGER PRIMARY KEY,
        category TEXT,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX canned_replies_category ON canned_replies(category);",
    // 8: the knowledge base, searchable with BM25 (Porter stems, so
    // "refunds" finds "refund").
    "CREATE TABLE kb_articles (
        id INTEGER PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        category TEXT,
        tags TEXT NOT NULL DEFAULT '',
        published INTEGER NOT NULL DEFAULT 1 CHECK (published IN (0, 1)),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE kb_fts USING fts5(
        title, tags, body, content='kb_articles', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER kb_fts_insert AFTER INSERT ON kb_articles BEGIN
        INSERT INTO kb_fts(rowid, title, tags, body) VALUES (new.id, new.title, new.tags, new.body);
    END;
    CREATE TRIGGER kb_fts_delete AFTER DELETE ON kb_articles BEGIN
        INSERT INTO kb_fts(kb_fts, rowid, title, tags, body)
        VALUES ('delete', old.id, old.title, old.tags, old.body);
    END;
    CREATE TRIGGER kb_fts_update AFTER UPDATE ON kb_articles BEGIN
        INSERT INTO kb_fts(kb_fts, rowid, title, tags, body)
        VALUES ('delete', old.id, old.title, old.tags, old.body);
        INSERT INTO kb_fts(rowid, title, tags, body) VALUES (new.id, new.title, new.tags, new.body);
    END;",
    // 9: the webhook outbox: messages written with the change that caused
    // them, one delivery per message and endpoint, endpoints' state.
    "CREATE TABLE webhook_messages (
        id INTEGER PRIMARY KEY,
        msg_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        ticket_id INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        fanned_out INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX webhook_messages_pending ON webhook_messages(fanned_out, id);
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
        endpoint TEXT NOT NULL,
        ticket_id INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_at);
    CREATE INDEX webhook_deliveries_order ON webhook_deliveries(endpoint, ticket_id, state, id);
    CREATE TABLE webhook_endpoints (
        url TEXT PRIMARY KEY,
        failures INTEGER NOT NULL DEFAULT 0,
        disabled_at TEXT,
        disabled_reason TEXT
    );",
    // 10: e-mail notifications: the customer's address on a ticket, staff
    // addresses, and the mail outbox (written with the change that causes a
    // mail, rendered and sent by the mail task).
    "ALTER TABLE tickets ADD COLUMN email TEXT;
    ALTER TABLE users ADD COLUMN email TEXT;
    CREATE TABLE mail_outbox (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        ticket_id INTEGER NOT NULL,
        to_addr TEXT NOT NULL,
        context TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX mail_outbox_due ON mail_outbox(state, next_at);",
    // 11: service-level clocks as last evaluated (on every change and on
    // the timer), one row per ticket and target: the dashboard's badges,
    // countdowns and filters read them without running the clocks.
    "CREATE TABLE sla_clocks (
        ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        due TEXT NOT NULL,
        met_at TEXT,
        breached_at TEXT,
        at_risk INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (ticket_id, target)
    );
    CREATE INDEX sla_clocks_running ON sla_clocks(due) WHERE met_at IS NULL AND breached_at IS NULL;",
    // 12: the queue's leases: a worker claims a ticket for a while (token,
    // owner, expiry) and renews it; its result is stored only under its
    // token; an expired lease is claimed again. Attempts are counted, and
    // why the models' run was given up is kept.
    "ALTER TABLE tickets ADD COLUMN lease_token TEXT;
    ALTER TABLE tickets ADD COLUMN lease_owner TEXT;
    ALTER TABLE tickets ADD COLUMN lease_expires TEXT;
    ALTER TABLE tickets ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tickets ADD COLUMN last_error TEXT;
    ALTER TABLE tickets ADD COLUMN failure TEXT;
    UPDATE tickets SET attempts = pipeline_runs;",
    // 13: several processes on one database. Every change to a ticket is an
    // `events` row (messages and staff changes too: `message`, `changed`),
    // read by id by each process's feed follower, so ids must never be
    // reused (AUTOINCREMENT: deleting the newest row, as re-rating does,
    // would otherwise hand its id out again). `leases` holds the jobs one
    // node at a time does (deliveries, timers); `nodes` is who is alive.
    "CREATE TABLE events_v13 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ticket_id INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL
    );
    INSERT INTO events_v13 (id, ticket_id, kind, detail, at)
        SELECT id, ticket_id, kind, detail, at FROM events ORDER BY id;
    DROP TABLE events;
    ALTER TABLE events_v13 RENAME TO events;
    CREATE INDEX events_ticket ON events(ticket_id, id);
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires TEXT NOT NULL
    );
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        started_at TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        engines TEXT NOT NULL DEFAULT '{}'
    );",
];

pub const LATEST: usize = MIGRATIONS.len();

/// The schema version: SQLite's `user_version`; PostgreSQL's
/// `schema_version` table (0 before the first migration).
pub fn version(conn: &Connection) -> Result<usize, StoreError> {
    let v: i64 = match conn.backend() {
        Backend::Sqlite => conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
        Backend::Postgres => conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0),
    };
    Ok(usize::try_from(v).unwrap_or(0))
}

/// The migrations of `backend`.
pub fn steps(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Sqlite => MIGRATIONS,
        Backend::Postgres => super::postgres::MIGRATIONS,
    }
}

/// Brings the schema to `target`; each step runs in its own transaction,
/// which checks the version again (nodes may start at the same time).
pub fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let backend = conn.backend();
    let steps = steps(backend);
    if backend == Backend::Postgres {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    }
    let current = version(conn)?;
    if current > steps.len() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: steps.len(),
        });
    }
    for (i, sql) in steps.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process (a node starting beside this one) may have taken
        // this step since the version was read.
        if version(&tx)? > i {
            continue;
        }
        tx.execute_batch(sql)?;
        match backend {
            Backend::Sqlite => tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?,
            Backend::Postgres => {
                tx.execute("DELETE FROM schema_version", [])?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [(i + 1) as i64],
                )?;
            }
        }
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
