//! Driving cargo: build test targets with a progress bar, run graders, and
//! read back per-test results.
//!
//! Graders run under cargo-nextest when it is installed (a process per test,
//! a hard time limit per test from `.config/nextest.toml`, results we can
//! parse line by line), and under plain `cargo test` otherwise. Builds use
//! `--keep-going` and cargo's JSON messages, so one lab that does not compile
//! is reported with its first error while every other lab is still graded.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Where and how to run cargo.
#[derive(Debug, Clone)]
pub struct Cargo {
    /// The workspace root.
    pub root: PathBuf,
    /// A target directory of its own (verify), or cargo's default.
    pub target_dir: Option<PathBuf>,
    /// Show progress bars (only on a terminal).
    pub progress: bool,
}

/// The outcome of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub package: String,
    pub name: String,
    pub passed: bool,
    /// The runner's word for it: PASS, FAIL, TIMEOUT, SIGSEGV, ...
    pub status: String,
    /// The test's captured output when it failed (may be empty).
    pub output: String,
}

impl Cargo {
    /// `cargo <args>` in the workspace root, with this target directory:
    /// every cargo the tool runs is made here.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(program());
        cmd.args(args).current_dir(&self.root);
        cmd.env("CARGO_TERM_COLOR", "never");
        if let Some(t) = &self.target_dir {
            cmd.env("CARGO_TARGET_DIR", t);
        }
        cmd
    }

    /// Starts cargo with `args` and `-p` for each of `packages`, stdout
    /// piped for the caller to read.
    fn spawn_for<'a>(
        &self,
        mut args: Vec<&'a str>,
        packages: &'a [String],
        stderr: Stdio,
        what: &str,
    ) -> Result<std::process::Child> {
        for p in packages {
            args.push("-p");
            args.push(p);
        }
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot run {what}"))
    }

    fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(msg.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Builds the test targets of `packages` (all of them even when some fail
    /// to compile) and returns, per package that failed, its first error.
    pub fn build_tests(
        &self,
        packages: &[String],
        label: &str,
    ) -> Result<BTreeMap<String, String>> {
        self.log(&format!("{label}: building {} packages", packages.len()));
        let args = vec![
            "build",
            "--tests",
            "--keep-going",
            "--message-format=json-diagnostic-rendered-ansi",
        ];
        let mut child = self.spawn_for(args, packages, Stdio::null(), "cargo")?;
        let estimate = self.crate_count_estimate();
        let bar = self.bar(estimate, label);
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        let mut built = 0u64;
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let package = msg["package_id"]
                .as_str()
                .map(package_name)
                .unwrap_or_default();
            match msg["reason"].as_str() {
                Some("compiler-artifact") => {
                    built += 1;
                    if built >= bar.length().unwrap_or(0) {
                        bar.set_length(built + 1);
                    }
                    bar.set_position(built);
                    bar.set_message(format!("{label}: {package}"));
                }
                Some("compiler-message") => {
                    if let Some((package, text)) = compiler_error(&line) {
                        errors.entry(package).or_insert(text);
                    }
                }
                _ => {}
            }
        }
        let status = child.wait()?;
        bar.finish_and_clear();
        if !status.success() && errors.is_empty() {
            anyhow::bail!(
                "cargo build failed without a compiler error; run `cargo build --tests` to see why"
            );
        }
        Ok(errors)
    }

    /// A rough count of the crates a build compiles, for the progress bar.
    fn crate_count_estimate(&self) -> u64 {
        let lock = std::fs::read_to_string(self.root.join("Cargo.lock")).unwrap_or_default();
        lock.matches("[[package]]").count() as u64 + 20
    }

    /// Runs the graders of `packages` and returns every test's result.
    /// Uses nextest with `profile` when available, else `cargo test`.
    pub fn run_tests(
        &self,
        packages: &[String],
        profile: &str,
        label: &str,
    ) -> Result<Vec<TestResult>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let results = if nextest_available() {
            self.run_nextest(packages, profile, label)?
        } else {
            let mut all = Vec::new();
            for p in packages {
                all.extend(self.run_cargo_test(p, None)?);
            }
            all
        };
        let failed = results.iter().filter(|r| !r.passed).count();
        self.log(&format!(
            "{label}: {} tests run, {failed} failed ({:.1} s)",
            results.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(results)
    }

    /// Builds `packages` in release mode, cargo's own output on the
    /// terminal (`cargo course bench`).
    pub fn build_release(&self, packages: &[String]) -> Result<()> {
        let mut args = vec!["build", "--release", "--quiet"];
        for p in packages {
            args.extend(["-p", p.as_str()]);
        }
        let mut cmd = self.command(&args);
        cmd.env_remove("CARGO_TERM_COLOR");
        let status = cmd.status().context("cannot run cargo")?;
        if !status.success() {
            anyhow::bail!(
                "the release build failed (see cargo's errors above); does every server lab compile?"
            );
        }
        Ok(())
    }

    /// Runs clippy with `-D warnings` on `packages` (all targets) and returns
    /// the first error per package.
    pub fn clippy(&self, packages: &[String]) -> Result<BTreeMap<String, String>> {
        if packages.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut args = vec![
            "clippy",
            "--all-targets",
            "--keep-going",
            "--message-format=json",
        ];
        for p in packages {
            args.extend(["-p", p.as_str()]);
        }
        args.extend(["--", "-D", "warnings"]);
        let out = self.command(&args).output().context(
            "cannot run cargo clippy (is the clippy component installed? `rustup component add clippy`)",
        )?;
        let mut errors = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((package, text)) = compiler_error(line) {
                errors.entry(package).or_insert(text);
            }
        }
        Ok(errors)
    }

    /// `cargo test` in `dir`, output on the terminal, exactly what a learner
    /// types (`cargo course check`); whether it passed.
    pub fn test_in(&self, dir: &Path) -> Result<bool> {
        let mut cmd = self.command(&["test"]);
        cmd.current_dir(dir).env_remove("CARGO_TERM_COLOR");
        Ok(cmd.status().context("cannot run cargo test")?.success())
    }

    /// Without a terminal (CI, a pipe), progress bars are hidden: say what
    /// is happening in one line on stderr instead, so a long run is not silent.
    fn log(&self, line: &str) {
        if !self.progress {
            eprintln!("[course] {line}");
        }
    }

    fn run_nextest(
        &self,
        packages: &[String],
        profile: &str,
        label: &str,
    ) -> Result<Vec<TestResult>> {
        let args = vec![
            "nextest",
            "run",
            "--no-fail-fast",
            "--cargo-quiet",
            "--status-level",
            "all",
            "--final-status-level",
            "none",
            "--hide-progress-bar",
            "--color",
            "never",
            "--no-tests",
            "pass",
            "--profile",
            profile,
        ];
        let mut child = self.spawn_for(args, packages, Stdio::piped(), "cargo nextest")?;
        // nextest writes results to stderr; drain stdout (test output of
        // passing tests is captured by nextest anyway) on its own thread.
        let stdout = child.stdout.take().expect("piped");
        let drain = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut s);
            s
        });
        let bar = self.bar(0, label);
        let mut results: Vec<TestResult> = Vec::new();
        let mut current_failure: Option<usize> = None;
        let mut log = String::new();
        for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            if let Some(n) = line.trim().strip_prefix("Starting ")
                && let Some(count) = n.split_whitespace().next().and_then(|c| c.parse().ok())
            {
                bar.set_length(count);
            }
            if let Some(r) = parse_nextest_line(&line) {
                bar.inc(1);
                current_failure = (!r.passed).then_some(results.len());
                results.push(r);
            } else if let Some(i) = current_failure {
                let out = &mut results[i].output;
                if out.len() < 20_000 {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        let status = child.wait()?;
        let _ = drain.join();
        bar.finish_and_clear();
        if results.is_empty() && !status.success() {
            anyhow::bail!(
                "cargo nextest failed before running any test:\n{}",
                tail(&log, 15)
            );
        }
        Ok(results)
    }

    /// Runs `cargo test` for one package (in the lab's folder when `dir` is
    /// given, exactly as a learner would) and parses libtest's lines.
    pub fn run_cargo_test(&self, package: &str, dir: Option<&Path>) -> Result<Vec<TestResult>> {
        let mut cmd = match dir {
            Some(d) => {
                let mut c = self.command(&["test", "--no-fail-fast"]);
                c.current_dir(d);
                c
            }
            None => self.command(&["test", "--no-fail-fast", "-p", package]),
        };
        let out = cmd.output().context("cannot run cargo test")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut results = parse_libtest(package, &stdout);
        if results.is_empty() && !out.status.success() {
            anyhow::bail!(
                "cargo test failed before running any test:\n{}",
                tail(&String::from_utf8_lossy(&out.stderr), 15)
            );
        }
        // Attach the failure sections libtest prints after the run.
        for r in results.iter_mut().filter(|r| !r.passed) {
            let marker = format!("---- {} stdout ----", r.name);
            if let Some(start) = stdout.find(&marker) {
                let rest = &stdout[start + marker.len()..];
                let end = rest
                    .find("\n---- ")
                    .or(rest.find("\nfailures:"))
                    .unwrap_or(rest.len());
                r.output = rest[..end].trim().to_string();
            }
        }
        Ok(results)
    }
}

/// Whether `cargo nextest` can be run here.
pub fn nextest_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new(program())
            .args(["nextest", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && std::env::var_os("COURSE_NO_NEXTEST").is_none()
    })
}

/// The cargo to run: the one that runs us (`cargo course`), else `cargo`.
fn program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A compiler error in one line of cargo's JSON messages: the package and
/// the rendered message (without colour codes).
fn compiler_error(line: &str) -> Option<(String, String)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-message" || msg["message"]["level"] != "error" {
        return None;
    }
    let package = msg["package_id"].as_str().map(package_name)?;
    let text = msg["message"]["rendered"]
        .as_str()
        .or(msg["message"]["message"].as_str())
        .unwrap_or("error");
    Some((package, strip_ansi(text)))
}

/// The package name in a cargo package id, old or new format:
/// `path+file:///x/lab_01_mini_cat#0.1.0`, `registry+https://...#serde@1.0.0`,
/// `lab_01_mini_cat 0.1.0 (path+file:///x)`.
pub fn package_name(id: &str) -> String {
    if !id.contains('#') {
        return id.split_whitespace().next().unwrap_or(id).to_string();
    }
    let (url, frag) = id.split_once('#').unwrap_or((id, ""));
    match frag.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(url)
            .to_string(),
    }
}

/// Parses one nextest status line:
/// `        PASS [   0.011s] lab_01_mini_cat::mini_cat test_01_prints`.
pub fn parse_nextest_line(line: &str) -> Option<TestResult> {
    let t = line.trim_start();
    let (status, rest) = t.split_once(" [")?;
    let status = status.trim();
    let passed = match status {
        "PASS" | "LEAK" => true,
        "FAIL" | "TIMEOUT" | "ABORT" | "LEAK-FAIL" => false,
        s if s.starts_with("SIG") => false,
        _ => return None,
    };
    let (_, rest) = rest.split_once("] ")?;
    // Newer nextest versions may show a counter such as `(3/11)` first.
    let rest = match rest.strip_prefix('(') {
        Some(r) => r.split_once(") ").map_or(rest, |(_, r)| r),
        None => rest,
    };
    let (binary, name) = rest.trim().split_once(' ')?;
    let package = binary.split("::").next().unwrap_or(binary).to_string();
    Some(TestResult {
        package,
        name: name.trim().to_string(),
        passed,
        status: status.to_string(),
        output: String::new(),
    })
}

/// Parses libtest's `test name ... ok` lines.
pub fn parse_libtest(package: &str, stdout: &str) -> Vec<TestResult> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("test ")?;
            let (name, verdict) = rest.rsplit_once(" ... ")?;
            let (passed, status) = match verdict.trim() {
                "ok" => (true, "PASS"),
                "FAILED" => (false, "FAIL"),
                _ => return None, // ignored, bench
            };
            Some(TestResult {
                package: package.to_string(),
                name: name.trim().to_string(),
                passed,
                status: status.to_string(),
                output: String::new(),
            })
        })
        .collect()
}

/// Groups results by package.
pub fn by_package(results: Vec<TestResult>) -> HashMap<String, Vec<TestResult>> {
    let mut map: HashMap<String, Vec<TestResult>> = HashMap::new();
    for r in results {
        map.entry(r.package.clone()).or_default().push(r);
    }
    map
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Removes ANSI colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first line of a compiler error that says what is wrong, with its
/// location: `error[E0425]: cannot find value `x` (src/main.rs:3:5)`.
pub fn first_error_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let head = lines.next().unwrap_or("error").trim().to_string();
    let at = lines
        .find_map(|l| l.trim().strip_prefix("--> ").map(str::to_string))
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    format!("{head}{at}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_names_from_ids() {
        assert_eq!(
            package_name("path+file:///w/ch/lab_01_mini_cat#0.1.0"),
            "lab_01_mini_cat"
        );
        assert_eq!(package_name("path+file:///w/x#lab_02@0.1.0"), "lab_02");
        assert_eq!(
            package_name("registry+https://r/index#serde@1.0.0"),
            "serde"
        );
        assert_eq!(package_name("lab_01 0.1.0 (path+file:///w)"), "lab_01");
    }

    #[test]
    fn parses_nextest_status_lines() {
        let r =
            parse_nextest_line("        PASS [   0.011s] lab_01_mini_cat::mini_cat test_01_prints")
                .unwrap();
        assert_eq!(
            (r.package.as_str(), r.name.as_str(), r.passed),
            ("lab_01_mini_cat", "test_01_prints", true)
        );
        let r = parse_nextest_line("     TIMEOUT [  30.001s] (3/9) parallel_sum tests::t").unwrap();
        assert_eq!(
            (r.package.as_str(), r.name.as_str(), r.passed),
            ("parallel_sum", "tests::t", false)
        );
        let r = parse_nextest_line("     SIGSEGV [   0.1s] x::y z").unwrap();
        assert!(!r.passed);
        assert!(parse_nextest_line("        SLOW [> 10.000s] x::y z").is_none());
        assert!(parse_nextest_line("    Starting 11 tests across 1 binary").is_none());
    }

    #[test]
    fn parses_libtest_lines() {
        let out = "running 2 tests\ntest test_01_a ... ok\ntest tests::b ... FAILED\ntest c ... ignored\n";
        let r = parse_libtest("p", out);
        assert_eq!(r.len(), 2);
        assert!(r[0].passed && !r[1].passed);
        assert_eq!(r[1].name, "tests::b");
    }

    #[test]
    fn first_error_line_has_the_location() {
        let e = "error[E0425]: cannot find value `x` in this scope\n --> src/main.rs:3:5\n  |\n";
        assert_eq!(
            first_error_line(e),
            "error[E0425]: cannot find value `x` in this scope (src/main.rs:3:5)"
        );
        assert_eq!(strip_ansi("\u{1b}[31merror\u{1b}[0m"), "error");
    }
}
