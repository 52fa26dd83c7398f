//! The resource: a task, and the three shapes a client sends of it.
//!
//! Everything here is a pure function of its input: no HTTP, no storage.
//! That is what makes validation testable on its own and shared by every
//! store (lab 33 swaps the store, not this file).
//!
//! Bodies are parsed in two steps. The API turns bytes into a
//! `serde_json::Value` (bad bytes are a 400), then this module checks the
//! fields one by one, *in the order title, done, priority*, and names the
//! first bad one (a 422). A `#[derive(Deserialize)]` struct would be
//! shorter, but serde stops at the first error in the order of the *input*
//! and its messages do not say which field in a form a client can use.

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
        format!("\"{}\"", self.version)
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
    // Lab 32's in-memory store used this; lab 33's store does the same in
    // SQL (`COALESCE($n, column)`), so nothing calls it now.
    #[allow(dead_code)]
    pub fn apply(&self, task: &mut Task) {
        if let Some(t) = &self.title {
            task.title = t.clone();
        }
        if let Some(d) = self.done {
            task.done = d;
        }
        if let Some(p) = self.priority {
            task.priority = p;
        }
    }
}

/// What `GET /tasks` filters on; `None` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub done: Option<bool>,
    pub priority: Option<u8>,
}

impl Filter {
    // Lab 32's in-memory store used this; lab 33's store filters in SQL
    // (`WHERE done = $n ...`), so nothing calls it now.
    #[allow(dead_code)]
    pub fn matches(&self, t: &Task) -> bool {
        self.done.is_none_or(|d| t.done == d) && self.priority.is_none_or(|p| t.priority == p)
    }
}

/// A position in creation order: the creation sequence number of the last
/// task of a page. Clients see it as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

impl Cursor {
    /// Decodes what [`Cursor::encode`] made; `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        // Digits only: `parse` alone would also take "+5".
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(Cursor)
    }

    pub fn encode(self) -> String {
        self.0.to_string()
    }
}

/// A validation failure: which field (if one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Option<&'static str>,
    pub message: String,
}

impl Invalid {
    fn field(field: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            field: Some(field),
            message: message.into(),
        }
    }
}

/// The body as an object, or a 422 without a field.
fn object(v: &Value) -> Result<&Map<String, Value>, Invalid> {
    v.as_object().ok_or_else(|| Invalid {
        field: None,
        message: "the body must be a JSON object".into(),
    })
}

/// How a field appears in a body. `null` is *present*: it is a value of
/// the wrong type, not a way to leave a field out.
fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name)
}

/// A title: a string, 1 to 200 characters once trimmed; returns it trimmed.
pub fn title(v: &Value) -> Result<String, Invalid> {
    let s = v
        .as_str()
        .ok_or_else(|| Invalid::field("title", "title must be a string"))?;
    let t = s.trim();
    // `chars().count()`, not `len()`: "é" is one character and two bytes.
    let n = t.chars().count();
    if n == 0 || n > TITLE_MAX_CHARS {
        return Err(Invalid::field(
            "title",
            format!("title must be 1 to {TITLE_MAX_CHARS} characters"),
        ));
    }
    Ok(t.to_string())
}

pub fn done(v: &Value) -> Result<bool, Invalid> {
    v.as_bool()
        .ok_or_else(|| Invalid::field("done", "done must be true or false"))
}

pub fn priority(v: &Value) -> Result<u8, Invalid> {
    // `as_i64` is None for floats (2.5) and for numbers beyond i64; the
    // range check happens on the i64, before any narrowing cast.
    match v.as_i64() {
        Some(p @ 1..=5) => Ok(p as u8),
        _ => Err(Invalid::field(
            "priority",
            "priority must be an integer from 1 to 5",
        )),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, Invalid> {
    get(obj, name).ok_or_else(|| Invalid::field(name, format!("{name} is required")))
}

impl NewTask {
    /// Validates a POST body; unknown fields are ignored.
    pub fn from_json(v: &Value) -> Result<NewTask, Invalid> {
        let obj = object(v)?;
        let title = title(required(obj, "title")?)?;
        let done = get(obj, "done").map(done).transpose()?.unwrap_or(false);
        let priority = get(obj, "priority")
            .map(priority)
            .transpose()?
            .unwrap_or(DEFAULT_PRIORITY);
        Ok(NewTask {
            title,
            done,
            priority,
        })
    }
}

impl TaskFields {
    /// Validates a PUT body: every field required.
    pub fn from_json(v: &Value) -> Result<TaskFields, Invalid> {
        let obj = object(v)?;
        let title = title(required(obj, "title")?)?;
        let done = done(required(obj, "done")?)?;
        let priority = priority(required(obj, "priority")?)?;
        Ok(TaskFields {
            title,
            done,
            priority,
        })
    }
}

impl TaskPatch {
    /// Validates a PATCH body: any subset, `{}` included.
    pub fn from_json(v: &Value) -> Result<TaskPatch, Invalid> {
        let obj = object(v)?;
        Ok(TaskPatch {
            title: get(obj, "title").map(title).transpose()?,
            done: get(obj, "done").map(done).transpose()?,
            priority: get(obj, "priority").map(priority).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn titles_count_characters_after_trimming() {
        assert_eq!(title(&json!("é".repeat(200))), Ok("é".repeat(200)));
        assert!(title(&json!("é".repeat(201))).is_err());
        assert_eq!(title(&json!("  a  ")), Ok("a".into()));
        assert!(title(&json!("   ")).is_err());
    }

    #[test]
    fn the_first_bad_field_is_named() {
        let e = NewTask::from_json(&json!({"priority": 0, "done": 1, "title": ""})).unwrap_err();
        assert_eq!(e.field, Some("title"));
        let e = NewTask::from_json(&json!({"priority": 0, "done": 1, "title": "x"})).unwrap_err();
        assert_eq!(e.field, Some("done"));
    }

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        assert_eq!(Cursor::decode(&Cursor(42).encode()), Some(Cursor(42)));
        for junk in ["", "+1", "-1", "abc", "99999999999999999999"] {
            assert_eq!(Cursor::decode(junk), None, "{junk}");
        }
    }
}
