//! The resource: a task, and the three shapes a client sends of it.
//!
//! Keep this module pure (no HTTP, no storage): validation here is shared
//! by every store, and you can unit-test it.
//!
//! Bodies arrive as a `serde_json::Value` (the API turns bad bytes into a
//! 400 first). Check the fields in the order title, done, priority and
//! name the first bad one. Remember: a title is 1 to 200 *characters*
//! after trimming, and `null` is a wrong value, not an absent field.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The longest title, in characters (Unicode scalar values), after trimming.
pub const TITLE_MAX_CHARS: usize = 200;

/// The priority when none is given.
pub const DEFAULT_PRIORITY: u8 = 3;

/// A stored task, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    pub done: bool,
    pub priority: u8,
    /// 1 on create, +1 on every successful PUT or PATCH. The ETag.
    pub version: i64,
}

impl Task {
    /// The entity tag of this version: strong, quoted (`"3"`).
    pub fn etag(&self) -> String {
        todo!()
    }
}

/// `POST /tasks`: a title, and done and priority with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub title: String,
    pub done: bool,
    pub priority: u8,
}

/// `PUT /tasks/{id}`: every field, none defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFields {
    pub title: String,
    pub done: bool,
    pub priority: u8,
}

/// `PATCH /tasks/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub done: Option<bool>,
    pub priority: Option<u8>,
}

impl TaskPatch {
    /// Applies the patch to `task`'s fields (not its version).
    pub fn apply(&self, task: &mut Task) {
        todo!()
    }
}

/// What `GET /tasks` filters on; `None` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub done: Option<bool>,
    pub priority: Option<u8>,
}

impl Filter {
    pub fn matches(&self, t: &Task) -> bool {
        todo!()
    }
}

/// A position in creation order (e.g. the creation sequence number of the
/// last task of a page). Clients see it as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl Cursor {
    /// Decodes what [`Cursor::encode`] made; `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        todo!()
    }

    pub fn encode(self) -> String {
        todo!()
    }
}

/// A validation failure: which field (if one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Option<&'static str>,
    pub message: String,
}

impl NewTask {
    /// Validates a POST body; unknown fields are ignored.
    pub fn from_json(v: &Value) -> Result<NewTask, Invalid> {
        todo!()
    }
}

impl TaskFields {
    /// Validates a PUT body: every field required.
    pub fn from_json(v: &Value) -> Result<TaskFields, Invalid> {
        todo!()
    }
}

impl TaskPatch {
    /// Validates a PATCH body: any subset, `{}` included.
    pub fn from_json(v: &Value) -> Result<TaskPatch, Invalid> {
        todo!()
    }
}
