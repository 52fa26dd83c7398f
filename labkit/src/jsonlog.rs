//! Structured logs: a server's stderr read as one JSON object per line.
//!
//! ```no_run
//! use labkit::jsonlog;
//! use labkit::server::Server;
//! let server = Server::builder("/path/to/tasks_traced").keep_stderr().spawn();
//! let mark = server.stderr_mark();
//! // ... send a request ...
//! let lines = jsonlog::lines_since(&server, mark); // fails on a line that is not JSON
//! let finished = lines.iter().filter(|l| l.field("latency_ms").is_some());
//! ```
//!
//! # The shape it reads
//!
//! `tracing-subscriber`'s JSON formatter writes one object per event:
//!
//! ```text
//! {"timestamp":"...","level":"INFO","fields":{"message":"finished","status":200},
//!  "target":"tasks_traced::api","span":{"request_id":"abc","name":"request"},
//!  "spans":[{"request_id":"abc","name":"request"}]}
//! ```
//!
//! `fields` holds the event's own fields (at the top level instead when the
//! formatter flattens them, `flatten_event(true)`: [`LogLine::field`] looks
//! in both), `span` the innermost span the event happened in, and `spans`
//! every span it is nested in, outermost first, each with its fields and its
//! `name`. [`LogLine::spans`] gives that list (or `span` alone when the list
//! is switched off), so a grader asks "which `request` span was this line
//! in, and what was its `request_id`?" without caring how the server
//! configured its formatter.
//!
//! Values are compared leniently where formatters legitimately differ: a
//! number recorded with `%` (Display) arrives as a string, so
//! [`number`] and [`text`] accept both.

use std::fmt;

use serde_json::{Map, Value};

use crate::report::show;
use crate::server::{Server, StderrMark};

/// One line of a structured log, parsed.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Its position among all the server's stderr lines, from 1.
    pub number: usize,
    /// The line as written (without its newline).
    pub raw: String,
    /// The parsed object.
    pub json: Map<String, Value>,
}

/// A line that is not one JSON object.
#[derive(Debug, Clone)]
pub struct NotJson {
    /// Its position among all the server's stderr lines, from 1.
    pub number: usize,
    pub line: String,
    /// What the parser said.
    pub error: String,
}

impl fmt::Display for NotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stderr line {} is not one JSON object ({}): {}",
            self.number,
            self.error,
            show(&self.line)
        )
    }
}

/// Parses every line as one JSON object; the first that is not is the
/// error. `first_number` is the position of `lines[0]` (from 1), for
/// messages.
pub fn parse(lines: &[String], first_number: usize) -> Result<Vec<LogLine>, NotJson> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let number = first_number + i;
            let bad = |error: String| NotJson {
                number,
                line: line.clone(),
                error,
            };
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(json)) => Ok(LogLine {
                    number,
                    raw: line.clone(),
                    json,
                }),
                Ok(other) => Err(bad(format!("it is a JSON {}", kind(&other)))),
                Err(e) => Err(bad(e.to_string())),
            }
        })
        .collect()
}

/// Every stderr line the server wrote after `mark`, each parsed as one JSON
/// object; fails the test, quoting the first line that is not, otherwise
/// (and first if the server wrote anything to stdout after `listening on`).
/// The server must have been spawned with
/// [`crate::server::ServerBuilder::keep_stderr`].
#[track_caller]
pub fn lines_since(server: &Server, mark: StderrMark) -> Vec<LogLine> {
    let lines = server.stderr_lines_since(mark);
    check(server, &lines, mark)
}

/// Waits (up to `deadline`, woken by the server's output) until `done`
/// holds for the parsed lines since `mark`, and returns them whether it
/// held or not (the caller reports what is missing). Fails as soon as a
/// line is not JSON.
#[track_caller]
pub fn wait_lines(
    server: &Server,
    mark: StderrMark,
    deadline: std::time::Duration,
    mut done: impl FnMut(&[LogLine]) -> bool,
) -> Vec<LogLine> {
    let lines = server.wait_stderr_lines(mark, deadline, |raw| match parse(raw, mark.0 + 1) {
        Ok(parsed) => done(&parsed),
        // Stop waiting: the failure is certain.
        Err(_) => true,
    });
    check(server, &lines, mark)
}

#[track_caller]
fn check(server: &Server, lines: &[String], mark: StderrMark) -> Vec<LogLine> {
    // Logs on stdout are the likelier mistake, and its own message.
    server.check_quiet_stdout();
    match parse(lines, mark.0 + 1) {
        Ok(parsed) => parsed,
        Err(bad) => server
            .report()
            .did("read the server's stderr, one JSON object per line")
            .expected("every line on stderr to be one JSON object (structured logs, nothing else)")
            .got(bad.to_string())
            .hint(
                "log through one tracing-subscriber fmt layer with .json() writing to stderr; no eprintln!, no second (plain text) layer, no ANSI colours",
            )
            .fail(),
    }
}

impl LogLine {
    /// The `level` (e.g. `"INFO"`), upper-cased.
    pub fn level(&self) -> Option<String> {
        self.json
            .get("level")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
    }

    /// The event's message (`fields.message`, or a top-level `message`).
    pub fn message(&self) -> Option<&str> {
        self.field("message").and_then(Value::as_str)
    }

    /// The `target` (the module path, unless the event set another).
    pub fn target(&self) -> Option<&str> {
        self.json.get("target").and_then(Value::as_str)
    }

    /// One of the event's own fields: `fields.<name>`, or `<name>` at the
    /// top level for a flattened event (never a span's field).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.json
            .get("fields")
            .and_then(Value::as_object)
            .and_then(|f| f.get(name))
            .or_else(|| match name {
                // Top-level keys of the formatter itself are not fields.
                "timestamp" | "level" | "target" | "span" | "spans" | "fields" => None,
                _ => self.json.get(name),
            })
    }

    /// The spans this line happened in, outermost first: the `spans` list,
    /// or the innermost `span` alone when there is no list.
    pub fn spans(&self) -> Vec<&Map<String, Value>> {
        if let Some(list) = self.json.get("spans").and_then(Value::as_array) {
            return list.iter().filter_map(Value::as_object).collect();
        }
        self.json
            .get("span")
            .and_then(Value::as_object)
            .into_iter()
            .collect()
    }

    /// The names of [`LogLine::spans`], outermost first.
    pub fn span_names(&self) -> Vec<&str> {
        self.spans()
            .into_iter()
            .map(|s| s.get("name").and_then(Value::as_str).unwrap_or("?"))
            .collect()
    }

    /// The innermost span named `name` this line happened in.
    pub fn span(&self, name: &str) -> Option<&Map<String, Value>> {
        self.spans()
            .into_iter()
            .rev()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
    }

    /// Field `field` of the innermost span named `span`.
    pub fn span_field(&self, span: &str, field: &str) -> Option<&Value> {
        self.span(span).and_then(|s| s.get(field))
    }

    /// Whether a span named `inner` is nested (at any depth) inside a span
    /// named `outer` on this line.
    pub fn nested(&self, outer: &str, inner: &str) -> bool {
        let names = self.span_names();
        match names.iter().position(|n| *n == outer) {
            Some(i) => names[i + 1..].contains(&inner),
            None => false,
        }
    }

    /// `name` from the event's fields, else from the innermost span that
    /// has it: where a value "appears on the line", however it got there.
    pub fn find(&self, name: &str) -> Option<&Value> {
        self.field(name)
            .or_else(|| self.spans().into_iter().rev().find_map(|s| s.get(name)))
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.number, self.raw)
    }
}

/// A value as text: a string as is, a number or boolean written out.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value as a number: a JSON number, or a string holding one (a field
/// recorded with `%`), finite.
pub fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    n.is_finite().then_some(n)
}

/// Quotes up to `max` lines for a failure message, one per line.
pub fn quote(lines: &[&LogLine], max: usize) -> String {
    let mut out: Vec<String> = lines.iter().take(max).map(|l| l.to_string()).collect();
    if lines.len() > max {
        out.push(format!("... and {} more", lines.len() - max));
    }
    if out.is_empty() {
        "(none)".to_string()
    } else {
        out.join("\n")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> LogLine {
        parse(&[line.to_string()], 1).unwrap().remove(0)
    }

    #[test]
    fn reads_tracing_subscriber_json() {
        let l = one(
            r#"{"timestamp":"t","level":"INFO","fields":{"message":"finished","status":200,"latency_ms":"1.5"},"target":"tasks_traced::api","span":{"request_id":"a","name":"db.query"},"spans":[{"request_id":"a","method":"GET","name":"request"},{"db.operation":"select","name":"db.query"}]}"#,
        );
        assert_eq!(l.level().as_deref(), Some("INFO"));
        assert_eq!(l.message(), Some("finished"));
        assert_eq!(l.target(), Some("tasks_traced::api"));
        assert_eq!(l.field("status").and_then(number), Some(200.0));
        assert_eq!(l.field("latency_ms").and_then(number), Some(1.5));
        assert_eq!(l.field("level"), None);
        assert_eq!(l.span_names(), ["request", "db.query"]);
        assert!(l.nested("request", "db.query"));
        assert!(!l.nested("db.query", "request"));
        assert_eq!(
            l.span_field("request", "method").and_then(text).as_deref(),
            Some("GET")
        );
        assert_eq!(l.find("request_id").and_then(text).as_deref(), Some("a"));
        assert_eq!(
            l.find("db.operation").and_then(text).as_deref(),
            Some("select")
        );
    }

    #[test]
    fn reads_flattened_events_and_a_lone_span() {
        let l = one(
            r#"{"level":"error","message":"boom","request_id":"x","span":{"name":"request","route":"/t"}}"#,
        );
        assert_eq!(l.level().as_deref(), Some("ERROR"));
        assert_eq!(l.message(), Some("boom"));
        assert_eq!(l.field("request_id").and_then(text).as_deref(), Some("x"));
        assert_eq!(l.span_names(), ["request"]);
        assert_eq!(
            l.span_field("request", "route").and_then(text).as_deref(),
            Some("/t")
        );
    }

    #[test]
    fn names_the_first_line_that_is_not_json() {
        let lines = ["{}".to_string(), "[1]".to_string(), "plain".to_string()];
        let e = parse(&lines, 7).unwrap_err();
        assert_eq!(e.number, 8);
        assert!(e.to_string().contains("JSON array"), "{e}");
        let e = parse(&lines[2..], 1).unwrap_err();
        assert!(e.to_string().contains("plain"), "{e}");
    }

    #[test]
    fn numbers_must_be_finite_numbers() {
        assert_eq!(number(&Value::from("abc")), None);
        assert_eq!(number(&Value::from("NaN")), None);
        assert_eq!(number(&Value::from(3)), Some(3.0));
        assert_eq!(number(&Value::Null), None);
    }
}
