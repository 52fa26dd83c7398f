//! The repository, on PostgreSQL: your job in this lab.
//!
//! Same interface as lab 32's in-memory store (the API calls it the same
//! way), now backed by the tables of `src/migrations/0001_tasks.sql` (see
//! the README's Schema). What each method must guarantee:
//!
//! - `list`: keyset pagination on `seq` (the creation order): a page is the
//!   matching tasks with `seq` above the cursor, in `seq` order. Fetch one
//!   more row than `limit` to know whether more follow.
//! - `replace`, `update`, `delete` with `expected` (the versions If-Match
//!   allows): the check and the write must be atomic *in the database*, so
//!   that two processes on one database cannot both pass it
//!   (`UPDATE ... WHERE id = $1 AND version = ANY($2)`, or
//!   `SELECT ... FOR UPDATE` first in the same transaction). A missing task
//!   is `NotFound`; a task whose version is not allowed is
//!   `VersionMismatch`.
//! - Every successful write (create, replace, update, delete) appends one
//!   `task_events` row (`created` / `updated` / `deleted`, with the task's
//!   version after the change; for a delete, the version deleted) *in the
//!   same transaction* as the write.
//! - Errors: a database that is down, slow or out of connections
//!   (`sqlx::Error::PoolTimedOut`, I/O errors, ...) is `Unavailable` (the
//!   API answers 503); anything else is `Internal` (500).
//!
//! Note: sqlx 0.9 only takes `&'static str` SQL: write each statement as a
//! literal (or `concat!` of literals), with every value as a bind parameter.

#![allow(unused)]

use sqlx::PgPool;
use uuid::Uuid;

use crate::model::{Cursor, Filter, NewTask, Task, TaskFields, TaskPatch};

/// The task repository: a handle on the connection pool, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

/// Why a store call did not do what was asked (the same four answers as
/// lab 32's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No task with that id.
    NotFound,
    /// The task exists but its version is none of those expected.
    VersionMismatch { current: Task },
    /// The database cannot be reached in time (down, slow, pool exhausted).
    Unavailable(String),
    /// A bug, a broken schema, a failed constraint.
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    /// Sorts sqlx's errors into `Unavailable` and `Internal`.
    fn from(e: sqlx::Error) -> Self {
        // TODO: PoolTimedOut, PoolClosed, Io, ... are Unavailable.
        StoreError::Internal(e.to_string())
    }
}

impl Store {
    /// A store on `pool`; `main.rs` has run the migrations already.
    pub fn new(pool: PgPool) -> Store {
        Store { pool }
    }

    /// Inserts a new task (version 1) and its `created` event.
    pub async fn create(&self, new: NewTask) -> Result<Task, StoreError> {
        todo!("INSERT INTO tasks ... RETURNING ..., and the created event, in one transaction")
    }

    /// The task with this id.
    pub async fn get(&self, id: Uuid) -> Result<Task, StoreError> {
        todo!("SELECT ... FROM tasks WHERE id = $1")
    }

    /// Tasks matching `filter`, in creation order, after `after` (a
    /// cursor), at most `limit`; returns the page (each task with its
    /// cursor) and whether more follow.
    pub async fn list(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<(Cursor, Task)>, bool), StoreError> {
        todo!("SELECT ... WHERE seq > $1 AND (filters) ORDER BY seq LIMIT limit + 1")
    }

    /// Replaces all fields; `expected` = the versions If-Match allows
    /// (None = unconditional). Bumps the version.
    pub async fn replace(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        fields: TaskFields,
    ) -> Result<Task, StoreError> {
        todo!("a conditional UPDATE and the updated event, in one transaction")
    }

    /// Changes the fields the patch sets (an empty patch still bumps the
    /// version); `expected` as for `replace`.
    pub async fn update(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        patch: TaskPatch,
    ) -> Result<Task, StoreError> {
        todo!("a conditional UPDATE and the updated event, in one transaction")
    }

    /// Deletes the task; `expected` as for `replace`.
    pub async fn delete(&self, id: Uuid, expected: Option<&[i64]>) -> Result<(), StoreError> {
        todo!("a conditional DELETE and the deleted event, in one transaction")
    }
}
