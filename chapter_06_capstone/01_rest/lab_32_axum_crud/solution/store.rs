//! The repository, in memory: every task behind one lock.
//!
//! The store knows nothing of HTTP; the API knows nothing of how tasks are
//! kept. This interface is the seam between labs 32 and 33: lab 33 keeps
//! every signature and puts PostgreSQL behind it.
//!
//! # Layout
//!
//! Tasks live in a `BTreeMap` keyed by a creation sequence number (`seq`,
//! 1, 2, 3, ... never reused), with a `HashMap` from id to seq beside it.
//! The B-tree gives creation order and the list's *keyset* pagination for
//! free: a page after cursor `c` is `range(c + 1..)`, a walk of a tree that
//! starts where the last page ended. Deleting tasks before or at the
//! cursor, or creating new ones (they get higher seqs), cannot shift what
//! the next page holds, unlike an offset (`skip(20)`), which silently
//! skips a task each time one before it is deleted.
//!
//! # One lock, held for the whole check-and-write
//!
//! A conditional write ("update if the version is still 3") must read the
//! version and write in one step: check, release the lock, lock again and
//! write, and two requests can both pass the check and both write (a lost
//! update). So every method takes the lock once and does all its work
//! under it. It is a `std::sync::Mutex`, not tokio's: nothing awaits while
//! holding it (the critical sections are a few map operations), and a
//! blocking lock held that briefly is cheaper than an async one. The
//! methods are `async` anyway, because lab 33's are.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::model::{Cursor, Filter, NewTask, Task, TaskFields, TaskPatch};

/// Why a store call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No task with that id.
    NotFound,
    /// The task exists but its version is not one of those expected.
    VersionMismatch { current: Task },
    /// The storage cannot be reached now (lab 33: the database; memory
    /// is always there, so this store never says it).
    #[allow(dead_code)]
    Unavailable(String),
    /// A bug or a broken invariant.
    Internal(String),
}

#[derive(Default)]
struct Inner {
    /// The last seq handed out.
    last_seq: i64,
    /// Tasks in creation order.
    by_seq: BTreeMap<i64, Task>,
    /// id -> seq.
    seq_of: HashMap<Uuid, i64>,
}

/// The tasks. Cloning is cheap: every clone shares the same tasks.
#[derive(Clone, Default)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
}

/// Fails unless `task`'s version is one of `expected` (None: any).
fn check(task: &Task, expected: Option<&[i64]>) -> Result<(), StoreError> {
    match expected {
        Some(versions) if !versions.contains(&task.version) => Err(StoreError::VersionMismatch {
            current: task.clone(),
        }),
        _ => Ok(()),
    }
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves maps that are still
        // consistent (every method mutates in one statement at the end), so
        // a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn create(&self, new: NewTask) -> Result<Task, StoreError> {
        let task = Task {
            id: Uuid::new_v4(),
            title: new.title,
            done: new.done,
            priority: new.priority,
            version: 1,
        };
        let mut inner = self.lock();
        inner.last_seq += 1;
        let seq = inner.last_seq;
        inner.seq_of.insert(task.id, seq);
        inner.by_seq.insert(seq, task.clone());
        Ok(task)
    }

    pub async fn get(&self, id: Uuid) -> Result<Task, StoreError> {
        let inner = self.lock();
        let seq = inner.seq_of.get(&id).ok_or(StoreError::NotFound)?;
        inner
            .by_seq
            .get(seq)
            .cloned()
            .ok_or_else(|| StoreError::Internal(format!("task {id} indexed but missing")))
    }

    /// Tasks matching `filter`, in creation order, after `after` (a
    /// cursor), at most `limit`; returns the page, whether more follow, and
    /// the cursor of the page's last task.
    pub async fn list(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<(Cursor, Task)>, bool), StoreError> {
        let inner = self.lock();
        let start = after.map_or(i64::MIN, |c| c.0.saturating_add(1));
        // Take one more than asked: whether it exists is "more follow",
        // without a second query, and it is a *matching* task, so the last
        // page never points at an empty one.
        let mut page: Vec<(Cursor, Task)> = inner
            .by_seq
            .range(start..)
            .filter(|(_, t)| filter.matches(t))
            .take(limit + 1)
            .map(|(seq, t)| (Cursor(*seq), t.clone()))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    /// Replaces all fields; `expected` = the versions If-Match allows
    /// (None = unconditional).
    pub async fn replace(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        fields: TaskFields,
    ) -> Result<Task, StoreError> {
        let patch = TaskPatch {
            title: Some(fields.title),
            done: Some(fields.done),
            priority: Some(fields.priority),
        };
        self.update(id, expected, patch).await
    }

    pub async fn update(
        &self,
        id: Uuid,
        expected: Option<&[i64]>,
        patch: TaskPatch,
    ) -> Result<Task, StoreError> {
        let mut inner = self.lock();
        let seq = *inner.seq_of.get(&id).ok_or(StoreError::NotFound)?;
        let task = inner
            .by_seq
            .get_mut(&seq)
            .ok_or_else(|| StoreError::Internal(format!("task {id} indexed but missing")))?;
        // The check and the write, under the same lock guard.
        check(task, expected)?;
        patch.apply(task);
        task.version += 1;
        Ok(task.clone())
    }

    pub async fn delete(&self, id: Uuid, expected: Option<&[i64]>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let seq = *inner.seq_of.get(&id).ok_or(StoreError::NotFound)?;
        if let Some(task) = inner.by_seq.get(&seq) {
            check(task, expected)?;
        }
        inner.by_seq.remove(&seq);
        inner.seq_of.remove(&id);
        Ok(())
    }
}
