//! Run a program under `strace` and read back its system calls.
//!
//! ```no_run
//! use labkit::{run::Cmd, strace::Strace};
//! let traced = Strace::new(Cmd::new("/bin/true")).trace("write,close").run();
//! assert_eq!(traced.count("write"), 0);
//! ```
//!
//! The trace goes to a file (`strace -o`), never to the program's stderr, so
//! the program's own output stays clean. With `-f` every line starts with the
//! thread id; calls interrupted by another thread's line (`<unfinished ...>`
//! and `<... write resumed>`) are stitched back together.

use std::path::Path;

use crate::report::Report;
use crate::run::{Cmd, Outcome};

/// One system call as strace printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    /// Thread id that made the call.
    pub pid: u32,
    /// Name of the call, e.g. `write`.
    pub name: String,
    /// The arguments as strace printed them, without the parentheses.
    pub args: String,
    /// The return value as printed, e.g. `5`, `-1 ENOENT (No such file or directory)`.
    pub ret: String,
}

impl Syscall {
    /// The return value as a number, when it is one (`-1` for errors).
    pub fn ret_value(&self) -> Option<i64> {
        self.ret.split_whitespace().next()?.parse().ok()
    }

    /// The first argument as a number (a file descriptor for most I/O calls).
    pub fn first_arg(&self) -> Option<i64> {
        self.args.split(',').next()?.trim().parse().ok()
    }

    /// The whole line, as strace printed it (without the pid).
    pub fn line(&self) -> String {
        format!("{}({}) = {}", self.name, self.args, self.ret)
    }
}

/// A command to run under strace.
#[derive(Debug, Clone)]
pub struct Strace {
    cmd: Cmd,
    options: Vec<String>,
}

impl Strace {
    /// Traces `cmd`, following threads and child processes (`-f`).
    pub fn new(cmd: Cmd) -> Self {
        Strace {
            cmd,
            options: Vec::new(),
        }
    }

    /// Traces only these calls (`-e trace=...`), e.g. `"write,openat,close"`
    /// or `"%file"`.
    pub fn trace(self, calls: &str) -> Self {
        self.option(format!("--trace={calls}"))
    }

    /// Passes any strace option, e.g. `--inject=openat:error=ENOENT:when=3`.
    pub fn option(mut self, option: impl Into<String>) -> Self {
        self.options.push(option.into());
        self
    }

    /// Runs the program under strace and parses the trace. Fails with one
    /// clear sentence if strace is missing or not allowed to trace.
    #[track_caller]
    pub fn run(&self) -> Traced {
        let Some(strace) = find_in_path("strace") else {
            Report::new(format!("tried to run `{}` under strace", self.cmd.command_line()))
                .got("strace is not installed")
                .hint("install it (Debian/Ubuntu: `sudo apt-get install strace`) or run `cargo course doctor`")
                .fail();
        };
        let dir = tempfile::tempdir().expect("create a temporary directory for the trace");
        let out = dir.path().join("trace.txt");
        let mut args: Vec<std::ffi::OsString> = vec![
            "-f".into(),
            "-qq".into(),
            // No padding before ` = `: one less thing for the parser to undo.
            "-a0".into(),
            "-s".into(),
            "64".into(),
            "-o".into(),
            out.clone().into_os_string(),
        ];
        args.extend(self.options.iter().map(Into::into));
        args.push("--".into());
        args.push(self.cmd.launch.program.clone().into_os_string());
        args.extend(self.cmd.launch.args.iter().cloned());

        let mut traced_cmd = self.cmd.clone();
        traced_cmd.launch.program = strace;
        traced_cmd.launch.args = args;
        let mut outcome = traced_cmd.run();
        outcome.command_line = format!(
            "strace {} -- {}",
            self.options.join(" "),
            self.cmd.command_line()
        );

        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.trim().is_empty() {
            let err = outcome.stderr_text();
            let why = if err.contains("Operation not permitted") || err.contains("ptrace") {
                "strace is not allowed to trace here (ptrace is blocked); in a container, run it with `--cap-add=SYS_PTRACE`"
            } else {
                "strace wrote no trace; its message is below"
            };
            outcome.report().got(why).fail();
        }
        Traced {
            calls: parse(&text),
            outcome,
            raw: text,
        }
    }
}

/// A traced run: the program's outcome and its system calls in order.
#[derive(Debug, Clone)]
pub struct Traced {
    /// How the program ended, with its stdout and stderr (strace's own
    /// messages, if any, are in stderr too).
    pub outcome: Outcome,
    /// Every completed call, in the order strace saw them finish.
    pub calls: Vec<Syscall>,
    /// The trace file as strace wrote it.
    pub raw: String,
}

impl Traced {
    /// How many calls named `name` were made.
    pub fn count(&self, name: &str) -> usize {
        self.named(name).count()
    }

    /// The calls named `name`, in order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Syscall> + 'a {
        self.calls.iter().filter(move |c| c.name == name)
    }

    /// The last `n` lines of the trace, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.raw.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Parses strace output (with or without `-f` pid prefixes).
pub fn parse(text: &str) -> Vec<Syscall> {
    let mut calls = Vec::new();
    // Calls interrupted by another thread: pid -> (name, args so far).
    let mut pending: Vec<(u32, String, String)> = Vec::new();
    for line in text.lines() {
        let (pid, rest) = match line.split_once(' ') {
            Some((p, r)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
                (p.parse().unwrap_or(0), r.trim_start())
            }
            _ => (0, line),
        };
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue; // signals and exits
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            // `<... write resumed>, "x", 1) = 1`
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some(i) = pending.iter().position(|(p, n, _)| *p == pid && n == name) else {
                continue;
            };
            let (_, name, head) = pending.remove(i);
            if let Some((args, ret)) = split_ret(tail) {
                calls.push(Syscall {
                    pid,
                    name,
                    args: format!("{head}{args}"),
                    ret,
                });
            }
            continue;
        }
        let Some(open) = rest.find('(') else { continue };
        let name = &rest[..open];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let after = &rest[open + 1..];
        if let Some(head) = after.strip_suffix(" <unfinished ...>") {
            pending.push((pid, name.to_string(), head.to_string()));
            continue;
        }
        if let Some((args, ret)) = split_ret(&format!("({after}")) {
            calls.push(Syscall {
                pid,
                name: name.to_string(),
                args: args.trim_start_matches('(').to_string(),
                ret,
            });
        }
    }
    calls
}

/// Splits `args) = ret` at the last `)` followed by ` = `. strace pads short
/// calls to a column (`close(3)      = 0`), so spaces may stand between.
fn split_ret(s: &str) -> Option<(String, String)> {
    let mut end = s.len();
    while let Some(i) = s[..end].rfind(" = ") {
        let head = s[..i].trim_end();
        if let Some(args) = head.strip_suffix(')') {
            return Some((args.to_string(), s[i + 3..].trim().to_string()));
        }
        end = i;
    }
    None
}

/// The full path of a program on `PATH`.
pub fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin"].iter().map(Into::into))
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_prefixed_and_resumed_lines() {
        let text = "\
1234  openat(AT_FDCWD, \"a.txt\", O_RDONLY|O_CLOEXEC) = 3
1234  write(1, \"x) = y\\n\", 6) = 6
1235  read(3,  <unfinished ...>
1234  close(3)                                = 0
1235  <... read resumed>\"abc\", 4096) = 3
1234  --- SIGCHLD {si_signo=SIGCHLD} ---
1234  openat(AT_FDCWD, \"missing\", O_RDONLY) = -1 ENOENT (No such file or directory)
1234  +++ exited with 0 +++
";
        let calls = parse(text);
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["openat", "write", "close", "read", "openat"]);
        assert_eq!(calls[1].args, "1, \"x) = y\\n\", 6");
        assert_eq!(calls[1].ret_value(), Some(6));
        assert_eq!(calls[1].first_arg(), Some(1));
        assert_eq!(calls[3].args, "3, \"abc\", 4096");
        assert_eq!(calls[3].pid, 1235);
        assert_eq!(calls[4].ret_value(), Some(-1));
    }

    #[test]
    fn parses_lines_without_pid() {
        let calls = parse("write(1, \"hi\", 2) = 2\nexit_group(0) = ?\n");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].ret, "?");
    }
}
