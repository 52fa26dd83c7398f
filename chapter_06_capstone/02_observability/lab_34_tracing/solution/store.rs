//! The repository, on PostgreSQL.
//!
//! Same interface as lab 32's in-memory store, so the handlers in `api.rs`
//! did not change: they never see SQL, and this module never sees HTTP. What moved from a `Mutex<HashMap>` into the database:
//!
//! - **Creation order is `seq`**, a `BIGSERIAL` primary key. A list page is
//!   `WHERE seq > $cursor ORDER BY seq LIMIT n` (keyset pagination): it
//!   costs one index range scan however deep the walk, and a task created
//!   or deleted between two pages moves no other task (an `OFFSET` would
//!   skip or repeat one). The `id` (a random UUID) is the public name and
//!   says nothing about order, so it is never the cursor.
//! - **The If-Match check is part of the write.** `UPDATE ... WHERE id = $1
//!   AND ($2 IS NULL OR version = ANY($2))` checks and writes in one statement
//!   under the row's lock: of two writers holding the same ETag, the second
//!   one waits for the first's lock, then re-evaluates the `WHERE` on the
//!   new row (PostgreSQL's READ COMMITTED does exactly that) and matches
//!   nothing. A `SELECT version` followed by an unconditional `UPDATE` would
//!   let both pass the check; no process-local lock can fix that once two
//!   instances share the database.
//! - **Each write and its `task_events` row commit together.** The event is
//!   an audit trail (and, later, an outbox other services could read); a
//!   task changed without its event, or an event for a change that never
//!   happened, would make it lie. So both statements run in one
//!   transaction, and an error in either rolls back both. Dropping a
//!   `sqlx::Transaction` without `commit` rolls it back, so the `?` on any
//!   statement, or a request cancelled by the timeout, leaves nothing
//!   half-done.
//! - **Every call is a `db.query` span** (lab 34): `#[instrument]` opens
//!   it when the method is called, inside the request's span (the caller's
//!   current span is the parent), so each line logged while the query runs
//!   names the request, its id, and `db.operation`. `skip_all` keeps the
//!   arguments (titles: user data) out of the log. The `debug!` after each
//!   statement is what makes the span visible at `RUST_LOG=debug`; at the
//!   default `info` it costs one level check.
//! - **Errors are sorted by who can fix them.** A database that is down,
//!   slow or out of connections is `Unavailable` (503: try again later);
//!   anything else that goes wrong is `Internal` (500: a bug or a broken
//!   schema). The caller decides the status; this module only classifies.

use sqlx::PgPool;
use sqlx::Row;
use sqlx::postgres::PgRow;
use tracing::{debug, instrument};
use uuid::Uuid;

use crate::model::{Cursor, Filter, NewTask, Task, TaskFields, TaskPatch};

/// The columns every query returns, for [`task`] to read. A macro, not a
/// `const`, so that `concat!` can build each statement as a `&'static str`:
/// sqlx 0.9 takes only static SQL (or an explicitly audited string), which
/// keeps values out of the SQL text and in bind parameters.
macro_rules! columns {
    () => {
        "seq, id, title, done, priority, version"
    };
}

/// The task repository: a handle on the connection pool, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// Why a store call failed (the same four answers as lab 32's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No task has this id.
    NotFound,
    /// The task exists, but its version is none of those the caller allows.
    VersionMismatch { current: Task },
    /// The database cannot be reached in time (down, slow, pool exhausted).
    Unavailable(String),
    /// Anything else: a bug, a broken schema, a failed constraint.
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // The pool had no connection for us within its acquire timeout
            // (all busy, or new ones cannot be opened), or it is closing.
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(e.to_string())
            }
            // The connection broke under us: reset, refused, timed out.
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // Class 08: connection exceptions; 53300: too many
                // connections; 57P0x: the server is shutting down or
                // restarting; 57014: a statement_timeout fired.
                Some(c) if c.starts_with("08") || c == "53300" || c.starts_with("57P") => {
                    StoreError::Unavailable(e.to_string())
                }
                Some("57014") => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Internal(e.to_string()),
            },
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// One row of `tasks` as its position in creation order and its `Task`.
fn row_task(row: &PgRow) -> Result<(Cursor, Task), sqlx::Error> {
    let priority: i16 = row.try_get("priority")?;
    let task = Task {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        done: row.try_get("done")?,
        // The API only ever stores 1..=5 (model.rs validates every write),
        // and the schema leaves the rule to it. A row that says otherwise
        // was written behind the service's back: an invariant is broken,
        // which is a bug to surface loudly, not a value to pass on to
        // clients. So this panics, and the request's panic net (trace.rs)
        // turns the panic into a logged 500 for this one request.
        priority: u8::try_from(priority)
            .ok()
            .filter(|p| (1..=5).contains(p))
            .expect("tasks.priority is 1..=5: the API never stores anything else"),
        version: row.try_get("version")?,
    };
    Ok((Cursor(row.try_get("seq")?), task))
}

/// One row of `tasks` as a `Task`.
fn task(row: &PgRow) -> Result<Task, sqlx::Error> {
    row_task(row).map(|(_, t)| t)
}

impl Store {
    /// A store on `pool`; the schema must be migrated already (`main.rs`
    /// does it at start).
    pub fn new(pool: PgPool) -> Store {
        Store { pool }
    }

    /// Inserts a new task (version 1) and its `created` event.
    #[instrument(name = "db.query", skip_all, fields(db.operation = "insert"))]
    pub async fn create(&self, new: NewTask) -> Result<Task, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO tasks (id, title, done, priority, version) \
             VALUES ($1, $2, $3, $4, 1) RETURNING ",
            columns!()
        ))
        .bind(Uuid::new_v4())
        .bind(&new.title)
        .bind(new.done)
        .bind(i16::from(new.priority))
        .fetch_one(&mut *tx)
        .await?;
        debug!("inserted");
        let t = task(&row)?;
        event(&mut tx, &t, "created").await?;
        tx.commit().await?;
        Ok(t)
    }

    /// The task with this id.
    #[instrument(name = "db.query", skip_all, fields(db.operation = "select"))]
    pub async fn get(&self, id: Uuid) -> Result<Task, StoreError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        debug!(found = row.is_some(), "selected");
        match row {
            Some(r) => Ok(task(&r)?),
            None => Err(StoreError::NotFound),
        }
    }

    /// Tasks matching `filter`, in creation order, after `after` (a cursor),
    /// at most `limit`; returns the page (each task with its cursor) and
    /// whether more follow.
    #[instrument(name = "db.query", skip_all, fields(db.operation = "select"))]
    pub async fn list(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<(Cursor, Task)>, bool), StoreError> {
        // One row more than the page: if it comes back, more follow, so
        // the last page never hands out a cursor to an empty one. The
        // `$n IS NULL OR ...` form keeps one statement for every filter
        // combination (fine at this size; a planner-friendlier version
        // builds the WHERE clause from the filters that are set).
        // seq starts at 1, so "after 0" is the first page.
        let after = after.map_or(0, |c| c.0);
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tasks \
             WHERE seq > $1 \
               AND ($2::boolean IS NULL OR done = $2) \
               AND ($3::smallint IS NULL OR priority = $3) \
             ORDER BY seq LIMIT $4"
        ))
        .bind(after)
        .bind(filter.done)
        .bind(filter.priority.map(i16::from))
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        debug!(rows = rows.len(), "selected");
        let mut tasks = rows.iter().map(row_task).collect::<Result<Vec<_>, _>>()?;
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        Ok((tasks, more))
    }

    /// Replaces every field; `expected` = the versions If-Match allows
    /// (None = unconditional; an empty list matches nothing). Bumps the
    /// version.
    #[instrument(name = "db.query", skip_all, fields(db.operation = "update"))]
    pub async fn replace(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        fields: TaskFields,
    ) -> Result<Task, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET title = $3, done = $4, priority = $5, version = version + 1 \
             WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY($2)) RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(expected)
        .bind(&fields.title)
        .bind(fields.done)
        .bind(i16::from(fields.priority))
        .fetch_optional(&mut *tx)
        .await?;
        debug!(matched = row.is_some(), "written");
        let Some(row) = row else {
            return Err(why_not(&mut tx, id).await);
        };
        let t = task(&row)?;
        event(&mut tx, &t, "updated").await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Changes the fields the patch sets (a patch of none still bumps the
    /// version); `expected` as for [`Store::replace`].
    #[instrument(name = "db.query", skip_all, fields(db.operation = "update"))]
    pub async fn update(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        patch: TaskPatch,
    ) -> Result<Task, StoreError> {
        let mut tx = self.pool.begin().await?;
        // COALESCE keeps the stored value where the patch has none, in the
        // same statement: no read-modify-write window for another writer.
        let row = sqlx::query(concat!(
            "UPDATE tasks SET title = COALESCE($3, title), done = COALESCE($4, done), \
                 priority = COALESCE($5, priority), version = version + 1 \
             WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY($2)) RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(expected)
        .bind(patch.title.as_deref())
        .bind(patch.done)
        .bind(patch.priority.map(i16::from))
        .fetch_optional(&mut *tx)
        .await?;
        debug!(matched = row.is_some(), "written");
        let Some(row) = row else {
            return Err(why_not(&mut tx, id).await);
        };
        let t = task(&row)?;
        event(&mut tx, &t, "updated").await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Deletes the task; `expected` as for [`Store::replace`].
    #[instrument(name = "db.query", skip_all, fields(db.operation = "delete"))]
    pub async fn delete(&self, id: Uuid, expected: Option<&[i64]>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "DELETE FROM tasks WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY($2)) \
             RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await?;
        debug!(matched = row.is_some(), "written");
        let Some(row) = row else {
            return Err(why_not(&mut tx, id).await);
        };
        // The event names the version that was deleted.
        event(&mut tx, &task(&row)?, "deleted").await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Appends the `task_events` row for a write, inside its transaction.
async fn event(
    tx: &mut sqlx::PgConnection,
    t: &Task,
    kind: &'static str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO task_events (task_id, version, kind) VALUES ($1, $2, $3)")
        .bind(t.id)
        .bind(t.version)
        .bind(kind)
        .execute(tx)
        .await?;
    Ok(())
}

/// A conditional write matched no row: either the task is gone (404) or
/// its version moved on (412, with the current task for the caller). Read
/// in the same transaction; the transaction is rolled back when dropped,
/// and it changed nothing anyway.
async fn why_not(tx: &mut sqlx::PgConnection, id: Uuid) -> StoreError {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_optional(tx)
        .await;
    match row {
        Ok(None) => StoreError::NotFound,
        Ok(Some(r)) => match task(&r) {
            Ok(current) => StoreError::VersionMismatch { current },
            Err(e) => e.into(),
        },
        Err(e) => e.into(),
    }
}
