//! One shape for every failure message in the course.
//!
//! A grader that fails tells the learner four things: what the test did, what
//! it expected, what it got, and where to look. [`Report`] collects them and
//! [`Report::fail`] panics with them laid out the same way in every lab:
//!
//! ```text
//! [test] ran: mini_cat notes.txt -n
//! [test] expected: exit code 0 and 3 numbered lines
//! [test] got: exit code 101 and a panic
//! [hint] do you open the file before parsing the flags?
//! [your program] thread 'main' panicked at src/main.rs:12:5:
//! ```
//!
//! The grader's own voice is `[test]`; anything the learner's program printed
//! is quoted under `[your program]` or `[your server]`, so the two never mix.

use std::cell::Cell;
use std::error::Error;
use std::fmt::{self, Debug, Display};
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

/// How many lines of a program's output a report quotes at most.
pub const TAIL_LINES: usize = 30;

/// A failure message under construction; see the module docs.
#[must_use = "a report does nothing until you call `fail`"]
#[derive(Debug, Default, Clone)]
pub struct Report {
    did: Vec<String>,
    expected: Option<String>,
    got: Option<String>,
    hint: Option<String>,
    quotes: Vec<(String, String)>,
}

impl Report {
    /// Starts a report with the first thing the test did ("ran: ...", "sent ...").
    pub fn new(did: impl Display) -> Self {
        Report {
            did: vec![did.to_string()],
            ..Report::default()
        }
    }

    /// Adds a further step the test took, in order.
    pub fn did(mut self, step: impl Display) -> Self {
        self.did.push(step.to_string());
        self
    }

    /// What a correct program would have done.
    pub fn expected(mut self, what: impl Display) -> Self {
        self.expected = Some(what.to_string());
        self
    }

    /// What this program did instead.
    pub fn got(mut self, what: impl Display) -> Self {
        self.got = Some(what.to_string());
        self
    }

    /// Where to look: best phrased as a question about the learner's code.
    pub fn hint(mut self, what: impl Display) -> Self {
        self.hint = Some(what.to_string());
        self
    }

    /// Quotes the tail of a program's output under `label` (e.g. "your program
    /// (stderr)"); empty text is left out.
    pub fn quote(mut self, label: impl Display, text: impl AsRef<[u8]>) -> Self {
        let text = String::from_utf8_lossy(text.as_ref()).into_owned();
        if !text.trim().is_empty() {
            self.quotes.push((label.to_string(), text));
        }
        self
    }

    /// Panics with the report. Use it where a test has found a failure.
    ///
    /// The report is the whole failure: it is printed without a stack
    /// backtrace of labkit, even with `RUST_BACKTRACE` set (see
    /// [`quiet_panics`]).
    #[track_caller]
    pub fn fail(self) -> ! {
        quiet_panics();
        REPORTING.with(|r| r.set(true));
        panic!("\n{self}")
    }

    /// Fails with this report unless `ok` holds.
    #[track_caller]
    pub fn check(self, ok: bool) {
        if !ok {
            self.fail()
        }
    }
}

/// Fails unless `got == want`: `did` says what was done to get `got`,
/// `hint` what to check. The one equality check of library graders.
#[track_caller]
pub fn same<T: PartialEq + Debug>(did: &str, want: T, got: T, hint: &str) {
    if want != got {
        Report::new(did)
            .expected(format!("{want:?}"))
            .got(format!("{got:?}"))
            .hint(hint)
            .fail();
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.did {
            writeln!(f, "[test] {step}")?;
        }
        if let Some(e) = &self.expected {
            writeln!(f, "[test] expected: {e}")?;
        }
        if let Some(g) = &self.got {
            writeln!(f, "[test] got: {g}")?;
        }
        if let Some(h) = &self.hint {
            writeln!(f, "[hint] {h}")?;
        }
        for (label, text) in &self.quotes {
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(TAIL_LINES);
            if skip > 0 {
                writeln!(f, "[{label}] ... ({skip} earlier lines not shown)")?;
            }
            for line in &lines[skip..] {
                writeln!(f, "[{label}] {line}")?;
            }
        }
        Ok(())
    }
}

thread_local! {
    /// Set by [`Report::fail`] just before it panics, so the panic hook
    /// knows this panic is a report, not a bug.
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once per process, a panic hook that prints a report's panic as
/// the report alone, plus the line of the grader that failed, and passes
/// every other panic to the hook that was there before (the standard one,
/// with its backtrace when `RUST_BACKTRACE` asks for it).
///
/// With `RUST_BACKTRACE=1` set, as many Rust developers have it, the
/// standard hook would print some twenty frames of labkit's internals under
/// every report, and the report would scroll away. A panic in the
/// learner's own code (a `todo!()` in a library lab) is not a report: it
/// keeps its backtrace.
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if REPORTING.with(|r| r.replace(false)) {
                let message = crate::wait::panic_message(info.payload());
                // The grader's line, when the failure is traced to it (a
                // line inside labkit says nothing to a learner).
                let at = info
                    .location()
                    .filter(|l| !l.file().contains("labkit/src"))
                    .map(|l| format!("[test] failed at {}:{}\n", l.file(), l.line()))
                    .unwrap_or_default();
                // Through `eprint!`, which the test harness captures per test.
                eprint!("{message}{at}");
            } else {
                previous(info);
            }
        }));
    });
}

/// An error and its sources, one after the other: "error sending request:
/// client error (Connect): tcp connect error: Connection refused (os error
/// 111)". Errors of HTTP and TLS clients hide the useful part in a source.
pub fn error_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some errors repeat their source in their own message.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Shows bytes the way a learner can compare them: as a quoted, escaped string,
/// shortened in the middle when long.
///
/// `show(b"hi\r\n")` is `"hi\r\n"`; a 1 MiB buffer shows its first and last
/// 60 bytes and how many were left out.
pub fn show(bytes: impl AsRef<[u8]>) -> String {
    const EDGE: usize = 60;
    let bytes = bytes.as_ref();
    let esc = |b: &[u8]| b.escape_ascii().to_string();
    if bytes.len() <= 2 * EDGE + 20 {
        format!("\"{}\"", esc(bytes))
    } else {
        format!(
            "\"{}\" ... ({} bytes) ... \"{}\"",
            esc(&bytes[..EDGE]),
            bytes.len() - 2 * EDGE,
            esc(&bytes[bytes.len() - EDGE..])
        )
    }
}

/// Compares two byte strings and, when they differ, describes the first
/// difference with its offset, line and a caret under the first wrong byte.
/// Returns `None` when they are equal.
pub fn first_difference(expected: &[u8], got: &[u8]) -> Option<String> {
    if expected == got {
        return None;
    }
    let at = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    let line = expected[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = expected[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let window = |s: &[u8]| {
        let end = s[line_start.min(s.len())..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(s.len(), |i| line_start + i + 1)
            .min(line_start + 100);
        s[line_start.min(s.len())..end.max(line_start.min(s.len()))]
            .escape_ascii()
            .to_string()
    };
    let caret_col = expected[line_start..at].escape_ascii().to_string().len();
    let what = if at == got.len() {
        format!(
            "output ends after {} bytes, {} bytes too early",
            got.len(),
            expected.len() - got.len()
        )
    } else if at == expected.len() {
        format!(
            "{} unexpected bytes after the expected end",
            got.len() - expected.len()
        )
    } else {
        format!(
            "byte {at} is {} but should be {}",
            show([got[at]]),
            show([expected[at]])
        )
    };
    Some(format!(
        "first difference at byte {at} (line {line}): {what}\n  expected: \"{}\"\n  got:      \"{}\"\n             {}^",
        window(expected),
        window(got),
        " ".repeat(caret_col)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lays_out_every_part_in_order() {
        let r = Report::new("ran: x")
            .did("sent y")
            .expected("a")
            .got("b")
            .hint("c?")
            .quote("your program", "line1\nline2\n");
        let text = r.to_string();
        assert_eq!(
            text,
            "[test] ran: x\n[test] sent y\n[test] expected: a\n[test] got: b\n[hint] c?\n\
             [your program] line1\n[your program] line2\n"
        );
    }

    #[test]
    #[should_panic(expected = "[test] expected: 1")]
    fn fail_panics_with_the_report() {
        Report::new("did").expected(1).got(2).fail();
    }

    #[test]
    fn show_escapes_and_shortens() {
        assert_eq!(show(b"hi\r\n"), "\"hi\\r\\n\"");
        let long = vec![b'a'; 1000];
        assert!(show(&long).contains("(880 bytes)"));
    }

    #[test]
    fn first_difference_points_at_the_byte() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        let d = first_difference(b"one\ntwo\n", b"one\ntwX\n").unwrap();
        assert!(d.contains("byte 6 (line 2)"), "{d}");
        assert!(d.contains("  ^"), "{d}");
        let short = first_difference(b"abc\n", b"abc").unwrap();
        assert!(short.contains("1 bytes too early"), "{short}");
        let long = first_difference(b"abc", b"abcdef").unwrap();
        assert!(long.contains("3 unexpected bytes"), "{long}");
    }
}
