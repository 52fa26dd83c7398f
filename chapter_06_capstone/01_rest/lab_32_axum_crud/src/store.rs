//! The repository, in memory.
//!
//! The store knows nothing of HTTP. Keep these signatures: lab 33 puts
//! PostgreSQL behind the same interface.
//!
//! Two things to get right: list pages by *position in creation order*
//! (keyset), not by offset; and a conditional write (`expected`) must
//! check the version and write in one step, under one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::model::{Cursor, Filter, NewTask, Task, TaskFields, TaskPatch};

/// Why a store call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No task with that id.
    NotFound,
    /// The task exists but its version is not one of those expected.
    VersionMismatch { current: Task },
    /// The storage cannot be reached now (lab 33: the database).
    Unavailable(String),
    /// A bug or a broken invariant.
    Internal(String),
}

/// The tasks. Cloning is cheap: every clone shares the same tasks.
#[derive(Clone, Default)]
pub struct Store {
    // TODO: the tasks, shared and locked (e.g. Arc<Mutex<...>>).
}

impl Store {
    pub fn new() -> Store {
        todo!()
    }

    pub async fn create(&self, new: NewTask) -> Result<Task, StoreError> {
        todo!()
    }

    pub async fn get(&self, id: Uuid) -> Result<Task, StoreError> {
        todo!()
    }

    /// Tasks matching `filter`, in creation order, after `after` (a
    /// cursor), at most `limit`; returns the page (each task with its
    /// cursor) and whether more matching tasks follow.
    pub async fn list(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<(Cursor, Task)>, bool), StoreError> {
        todo!()
    }

    /// Replaces all fields; `expected` = the versions If-Match allows
    /// (None = unconditional).
    pub async fn replace(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        fields: TaskFields,
    ) -> Result<Task, StoreError> {
        todo!()
    }

    pub async fn update(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        patch: TaskPatch,
    ) -> Result<Task, StoreError> {
        todo!()
    }

    pub async fn delete(&self, id: Uuid, expected: Option<&[i64]>) -> Result<(), StoreError> {
        todo!()
    }
}
