//! Staff accounts: named users with a role, an argon2 password hash and an
//! active flag. Names are unique regardless of case.

use super::sql::{Backend, OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError};
use crate::clock;
use crate::ticket::Role;

/// A staff account (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub active: bool,
    pub created_at: String,
    /// Where their notifications go (a ticket assigned to them).
    pub email: Option<String>,
}

const COLUMNS: &str = "id, name, role, active, created_at, email";

fn user_row(r: &super::sql::Row<'_>) -> super::sql::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get::<_, String>(2)?.parse().unwrap_or(Role::Agent),
        active: r.get(3)?,
        created_at: r.get(4)?,
        email: r.get(5)?,
    })
}

impl Store {
    /// Creates a user; a taken name is a conflict.
    pub fn create_user(&self, name: &str, role: Role, hash: &str) -> Result<User, StoreError> {
        let now = clock::now();
        self.write(|c| {
            let taken = c
                .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Err(StoreError::Conflict(format!(
                    "a user named '{name}' exists"
                )));
            }
            let id: i64 = c.query_row(
                "INSERT INTO users (name, role, password_hash, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
                params![name, role.as_str(), hash, now],
                |r| r.get(0),
            )?;
            Ok(User {
                id,
                name: name.to_string(),
                role,
                active: true,
                created_at: now.clone(),
                email: None,
            })
        })
    }

    /// Sets a user's password, creating the user with `role` when missing
    /// (`admin set-password`, `SMART_SUPPORT_ADMIN_PASSWORD`).
    pub fn upsert_user_password(
        &self,
        name: &str,
        role: Role,
        hash: &str,
    ) -> Result<(), StoreError> {
        let now = clock::now();
        self.write(|c| {
            // Names are unique regardless of case: SQLite's NOCASE column,
            // PostgreSQL's index on lower(name).
            let target = match c.backend() {
                Backend::Sqlite => "name",
                Backend::Postgres => "(lower(name))",
            };
            c.execute(
                &format!(
                    "INSERT INTO users (name, role, password_hash, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)
                     ON CONFLICT({target}) DO UPDATE SET password_hash = excluded.password_hash,
                         updated_at = excluded.updated_at"
                ),
                params![name, role.as_str(), hash, now],
            )?;
            Ok(())
        })
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users ORDER BY name"))?;
        let users = st.query_map([], user_row)?.collect::<Result<_, _>>()?;
        Ok(users)
    }

    pub fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?;
        Ok(st.query_row([id], user_row).optional()?)
    }

    /// The user and their password hash, for signing in.
    pub fn user_for_login(&self, name: &str) -> Result<Option<(User, String)>, StoreError> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, password_hash FROM users WHERE name = ?1"
        ))?;
        Ok(st
            .query_row([name], |r| Ok((user_row(r)?, r.get(6)?)))
            .optional()?)
    }

    pub fn has_users(&self) -> Result<bool, StoreError> {
        Ok(self
            .reader()
            .query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?)
    }

    /// Changes a user's password, role or active flag. Refuses to leave no
    /// active admin: someone must be able to manage the team.
    pub fn update_user(&self, name: &str, change: UserChange) -> Result<User, StoreError> {
        let now = clock::now();
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
            let user = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM users WHERE name = ?1"),
                    [name],
                    user_row,
                )
                .optional()?
                .ok_or(StoreError::UserNotFound)?;
            // Only a role or an activation change can remove the last admin.
            let may_remove_admin = matches!(change, UserChange::Role(_) | UserChange::Active(_));
            match change {
                UserChange::Password(hash) => {
                    tx.execute(
                        "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                        params![user.id, hash, now],
                    )?;
                }
                UserChange::Role(role) => {
                    tx.execute(
                        "UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1",
                        params![user.id, role.as_str(), now],
                    )?;
                }
                UserChange::Active(active) => {
                    tx.execute(
                        "UPDATE users SET active = ?2, updated_at = ?3 WHERE id = ?1",
                        params![user.id, active, now],
                    )?;
                }
                UserChange::Email(email) => {
                    tx.execute(
                        "UPDATE users SET email = ?2, updated_at = ?3 WHERE id = ?1",
                        params![user.id, email, now],
                    )?;
                }
            }
            let admins: i64 = tx.query_row(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1",
                [],
                |r| r.get(0),
            )?;
            if admins == 0 && may_remove_admin {
                return Err(StoreError::Conflict(
                    "that would leave no active admin; make someone else an admin first".into(),
                ));
            }
            let updated = tx.query_row(
                &format!("SELECT {COLUMNS} FROM users WHERE id = ?1"),
                [user.id],
                user_row,
            )?;
            tx.commit()?;
            Ok(updated)
        })
    }
}

/// One change to a user.
#[derive(Debug, Clone)]
pub enum UserChange {
    /// A new argon2 hash.
    Password(String),
    Role(Role),
    Active(bool),
    /// A checked address, or none.
    Email(Option<String>),
}
