//! `cargo course verify`: the course's own test suite.
//!
//! For every selected lab it checks, in a scratch copy of the workspace with
//! a target directory of its own (the learner's tree and binaries are never
//! touched):
//!
//! 1. the lab's files exist, and the committed `src/` equals `problem/`;
//! 2. with `solution/` as `src/`, every test passes (under nextest, and once
//!    more under the learner's own `cargo test` in the lab folder), and the
//!    solution is rustfmt- and clippy-clean;
//! 3. with `problem/` as `src/`, it compiles and every test fails, except
//!    those `course.toml` lists under `starter_passes`;
//! 4. each `mutants/*.patch`, applied to the solution, applies, compiles and
//!    makes at least one test fail (the first catching test is named).
//!
//! Speed comes from rounds: all labs are swapped at once and the whole
//! selection is built and graded by one cargo invocation per round (one for
//! the solutions, one for the starters, one per mutant index), with
//! `--keep-going` so one broken lab never hides the others. The scratch tree
//! is mirrored file by file, writing only what changed, so cargo rebuilds
//! only the crates whose sources really differ between rounds.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cargo::{self, Cargo, TestResult};
use crate::fsutil;
use crate::manifest::{Course, Lab};
use crate::style::Style;

/// The fewest mutants a lab must ship.
pub const MIN_MUTANTS: usize = 3;

/// One checked fact about a lab or the course.
#[derive(Debug, Clone)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

#[derive(Debug, Default)]
struct Checks {
    global: Vec<Check>,
    labs: BTreeMap<String, Vec<Check>>,
    /// One summary phrase per lab (test counts), for the per-lab line.
    summary: BTreeMap<String, Vec<String>>,
}

impl Checks {
    fn add(&mut self, lab: &str, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.labs.entry(lab.to_string()).or_default().push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    fn global(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.global.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    fn note(&mut self, lab: &str, text: String) {
        self.summary.entry(lab.to_string()).or_default().push(text);
    }

    fn lab_ok(&self, lab: &str) -> bool {
        self.labs.get(lab).is_none_or(|cs| cs.iter().all(|c| c.ok))
    }
}

/// A mutant: a known-wrong variant of a lab's solution.
#[derive(Debug, Clone)]
struct Mutant {
    name: String,
    /// The files of the mutated solution, or why it could not be made.
    files: Result<BTreeMap<PathBuf, Vec<u8>>, String>,
}

/// Runs the verification; returns whether everything passed.
pub fn verify(course: &Course, selected: &[Lab], s: &Style) -> Result<bool> {
    let started = Instant::now();
    let mut checks = Checks::default();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let root = &course.root;
    let ready = course.ready_labs();
    if selected.is_empty() {
        bail!("no ready labs to verify");
    }

    // Phase 0: static checks, no build.
    let t = Instant::now();
    global_checks(course, &ready, &mut checks);
    for lab in selected {
        file_checks(course, lab, &mut checks);
    }
    phases.push(("static checks".into(), t.elapsed().as_secs_f64()));

    // Labs whose files are too broken to build are left out of the rounds.
    let labs: Vec<&Lab> = selected
        .iter()
        .filter(|l| {
            l.dir.join("solution").is_dir()
                && l.dir.join("problem").is_dir()
                && l.dir.join("Cargo.toml").is_file()
        })
        .collect();

    let scratch = std::env::var_os("COURSE_VERIFY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".course/verify"));
    let tree = scratch.join("tree");
    let cargo = Cargo {
        root: tree.clone(),
        target_dir: Some(scratch.join("target")),
        progress: s.interactive(),
    };
    let profile = if fs::read_to_string(root.join(".config/nextest.toml"))
        .is_ok_and(|t| t.contains("[profile.verify]"))
    {
        "verify"
    } else {
        "default"
    };

    // Phase 1: the solutions.
    let t = Instant::now();
    let src_dirs: HashSet<PathBuf> = ready
        .iter()
        .map(|l| PathBuf::from(&l.rel).join("src"))
        .collect();
    fsutil::mirror(root, &tree, &|rel: &Path| {
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        matches!(first.as_deref(), Some("target" | ".course" | ".git")) || src_dirs.contains(rel)
    })
    .context("cannot copy the course to its scratch folder")?;
    for lab in &ready {
        let from = if labs.iter().any(|l| l.id() == lab.id()) {
            "solution"
        } else {
            "problem"
        };
        set_src(&tree, lab, &read_tree(&lab.dir.join(from)))?;
    }
    let packages: Vec<String> = labs.iter().map(|l| l.package().to_string()).collect();
    let round = Round::run(&cargo, profile, "verify: solutions", &packages)?;
    let compiled = round.compiled.clone();
    for lab in &labs {
        let id = lab.id();
        let rs = match round.outcome(lab) {
            Err(e) => {
                checks.add(id, "solution compiles", false, cargo::first_error_line(e));
                continue;
            }
            Ok(rs) => rs,
        };
        let failed: Vec<&TestResult> = rs.iter().filter(|r| !r.passed).collect();
        let detail = if rs.is_empty() {
            "the grader ran no tests".to_string()
        } else if failed.is_empty() {
            String::new()
        } else {
            failed_detail(&failed)
        };
        checks.add(
            id,
            "solution passes every test",
            !rs.is_empty() && failed.is_empty(),
            detail,
        );
        checks.note(id, format!("{} tests", rs.len()));
    }
    phases.push((
        "solutions: build and grade".into(),
        t.elapsed().as_secs_f64(),
    ));

    // Lints on the solution-swapped tree.
    let t = Instant::now();
    let lint_errors = cargo.clippy(&compiled)?;
    for lab in labs
        .iter()
        .filter(|l| compiled.contains(&l.package().to_string()))
    {
        let e = lint_errors.get(lab.package());
        checks.add(
            lab.id(),
            "clippy -D warnings is clean",
            e.is_none(),
            e.map(|e| cargo::first_error_line(e)).unwrap_or_default(),
        );
        let fmt = rustfmt_check(lab);
        checks.add(
            lab.id(),
            "rustfmt is clean",
            fmt.is_ok(),
            fmt.err().unwrap_or_default(),
        );
    }
    phases.push((
        "solutions: clippy and rustfmt".into(),
        t.elapsed().as_secs_f64(),
    ));

    // The learner's own command, once per lab.
    let t = Instant::now();
    for lab in labs
        .iter()
        .filter(|l| compiled.contains(&l.package().to_string()))
    {
        let rs = cargo.run_cargo_test(lab.package(), Some(&tree.join(&lab.rel)));
        let (ok, detail) = match rs {
            Ok(rs) if rs.is_empty() => (false, "cargo test ran no tests".to_string()),
            Ok(rs) => {
                let failed: Vec<&TestResult> = rs.iter().filter(|r| !r.passed).collect();
                (
                    failed.is_empty(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        failed_detail(&failed)
                    },
                )
            }
            Err(e) => (false, e.to_string()),
        };
        checks.add(
            lab.id(),
            "solution passes under plain `cargo test`",
            ok,
            detail,
        );
    }
    phases.push((
        "solutions: plain cargo test".into(),
        t.elapsed().as_secs_f64(),
    ));

    // Phase 2: the starters.
    let t = Instant::now();
    for lab in &labs {
        set_src(&tree, lab, &read_tree(&lab.dir.join("problem")))?;
    }
    let round = Round::run(&cargo, profile, "verify: starters", &packages)?;
    for lab in &labs {
        let id = lab.id();
        let rs = match round.outcome(lab) {
            Err(e) => {
                checks.add(id, "starter compiles", false, cargo::first_error_line(e));
                continue;
            }
            Ok(rs) => rs,
        };
        checks.add(id, "starter compiles", true, "");
        let allowed: Vec<&str> = lab
            .entry
            .starter_passes
            .iter()
            .map(|p| p.test.as_str())
            .collect();
        let passing: Vec<&TestResult> = rs.iter().filter(|r| r.passed).collect();
        let unexpected: Vec<&str> = passing
            .iter()
            .filter(|r| {
                !allowed
                    .iter()
                    .any(|a| r.name == *a || r.name.ends_with(&format!("::{a}")))
            })
            .map(|r| r.name.as_str())
            .collect();
        checks.add(
            id,
            "starter fails its grader",
            !rs.is_empty() && unexpected.is_empty(),
            if rs.is_empty() {
                "the grader ran no tests on the starter".to_string()
            } else {
                format!(
                    "these tests pass on the untouched starter, so they teach nothing (list deliberate ones under starter_passes in course.toml): {}",
                    unexpected.join(", ")
                )
            },
        );
        let reasons: Vec<String> = lab
            .entry
            .starter_passes
            .iter()
            .map(|p| format!("{}: {}", p.test, p.reason))
            .collect();
        checks.note(
            id,
            if reasons.is_empty() {
                format!("starter: {} of {} pass", passing.len(), rs.len())
            } else {
                format!(
                    "starter: {} of {} pass, allowed: {}",
                    passing.len(),
                    rs.len(),
                    reasons.join("; ")
                )
            },
        );
    }
    phases.push((
        "starters: build and grade".into(),
        t.elapsed().as_secs_f64(),
    ));

    // Phase 3: the mutants, one index per round across all labs.
    let t = Instant::now();
    let mutants: BTreeMap<String, Vec<Mutant>> = labs
        .iter()
        .map(|l| (l.id().to_string(), load_mutants(l)))
        .collect();
    let rounds = mutants.values().map(Vec::len).max().unwrap_or(0);
    let mut caught_count: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..rounds {
        let mut in_round: Vec<(&Lab, &Mutant)> = Vec::new();
        for lab in &labs {
            let Some(m) = mutants[lab.id()].get(round) else {
                continue;
            };
            match &m.files {
                Ok(files) => {
                    set_src(&tree, lab, files)?;
                    in_round.push((lab, m));
                }
                Err(why) => checks.add(
                    lab.id(),
                    format!("mutant {} applies", m.name),
                    false,
                    why.clone(),
                ),
            }
        }
        let pkgs: Vec<String> = in_round
            .iter()
            .map(|(l, _)| l.package().to_string())
            .collect();
        let graded = Round::run(
            &cargo,
            profile,
            &format!("verify: mutants {}/{rounds}", round + 1),
            &pkgs,
        )?;
        for (lab, m) in in_round {
            let name = format!("mutant {} is caught", m.name);
            let rs = match graded.outcome(lab) {
                Err(e) => {
                    checks.add(
                        lab.id(),
                        name,
                        false,
                        format!(
                            "the mutant does not compile, so it proves nothing: {}",
                            cargo::first_error_line(e)
                        ),
                    );
                    continue;
                }
                Ok(rs) => rs,
            };
            let catching: Vec<&str> = rs
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.name.as_str())
                .collect();
            let detail = match catching.as_slice() {
                [] => format!(
                    "every one of {} tests passes with this bug in place: add a test that fails on it",
                    rs.len()
                ),
                [first, rest @ ..] => format!(
                    "caught by {first}{}",
                    if rest.is_empty() {
                        String::new()
                    } else {
                        format!(" and {} more", rest.len())
                    }
                ),
            };
            let ok = !catching.is_empty();
            if ok {
                *caught_count.entry(lab.id().to_string()).or_default() += 1;
            }
            checks.add(lab.id(), name, ok, detail);
        }
    }
    for lab in &labs {
        let n = mutants[lab.id()].len();
        checks.note(
            lab.id(),
            format!(
                "{} of {n} mutants caught",
                caught_count.get(lab.id()).copied().unwrap_or(0)
            ),
        );
    }
    phases.push((
        format!("mutants: {rounds} rounds"),
        t.elapsed().as_secs_f64(),
    ));

    // Put the scratch tree back to the starters so a later run starts clean.
    for lab in &labs {
        set_src(&tree, lab, &read_tree(&lab.dir.join("problem")))?;
    }

    Ok(print_summary(&checks, selected, &phases, started, s))
}

/// One round of verify: the labs' `src/` are already swapped in the
/// scratch tree; build them all at once (one broken lab never hides the
/// others), grade the ones that compiled, and group the results by lab.
struct Round {
    /// Per package that did not compile: its first error.
    errors: BTreeMap<String, String>,
    /// The packages that compiled, in the order given.
    compiled: Vec<String>,
    results: std::collections::HashMap<String, Vec<TestResult>>,
}

impl Round {
    fn run(cargo: &Cargo, profile: &str, label: &str, packages: &[String]) -> Result<Round> {
        let errors = cargo.build_tests(packages, label)?;
        let compiled: Vec<String> = packages
            .iter()
            .filter(|p| !errors.contains_key(*p))
            .cloned()
            .collect();
        let results = cargo::by_package(cargo.run_tests(&compiled, profile, label)?);
        Ok(Round {
            errors,
            compiled,
            results,
        })
    }

    /// The lab's test results, or its compile error.
    fn outcome(&self, lab: &Lab) -> Result<&[TestResult], &str> {
        match self.errors.get(lab.package()) {
            Some(e) => Err(e),
            None => Ok(self
                .results
                .get(lab.package())
                .map(Vec::as_slice)
                .unwrap_or_default()),
        }
    }
}

fn print_summary(
    checks: &Checks,
    selected: &[Lab],
    phases: &[(String, f64)],
    started: Instant,
    s: &Style,
) -> bool {
    println!();
    for c in &checks.global {
        if !c.ok {
            println!("{} course: {}: {}", s.red("FAIL"), c.name, c.detail);
        }
    }
    for lab in selected {
        let id = lab.id();
        let cs = checks.labs.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let summary = checks
            .summary
            .get(id)
            .map(|v| v.join("; "))
            .unwrap_or_default();
        if checks.lab_ok(id) {
            println!(
                "{} {id:<26} {} checks ({summary})",
                s.green("ok  "),
                cs.len()
            );
        } else {
            println!(
                "{} {id:<26} {} of {} checks failed ({summary})",
                s.red("FAIL"),
                cs.iter().filter(|c| !c.ok).count(),
                cs.len()
            );
            for c in cs.iter().filter(|c| !c.ok) {
                println!("       - {}: {}", c.name, c.detail.trim());
            }
        }
    }
    println!();
    for (phase, secs) in phases {
        println!("{}", s.dim(&format!("  {phase:<32} {secs:>6.1} s")));
    }
    println!(
        "{}",
        s.dim(&format!(
            "  {:<32} {:>6.1} s",
            "total",
            started.elapsed().as_secs_f64()
        ))
    );
    let all = checks.global.iter().chain(checks.labs.values().flatten());
    let (passed, failed) = all.fold(
        (0, 0),
        |(p, f), c| if c.ok { (p + 1, f) } else { (p, f + 1) },
    );
    println!("{passed} passed, {failed} failed");
    failed == 0
}

fn failed_detail(failed: &[&TestResult]) -> String {
    // Tests finish in any order; name them in test order.
    let mut failed = failed.to_vec();
    failed.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = failed
        .iter()
        .map(|r| format!("{} ({})", r.name, r.status))
        .collect();
    let first = failed
        .first()
        .map(|r| {
            let lines: Vec<&str> = r
                .output
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(12)
                .collect();
            if lines.is_empty() {
                String::new()
            } else {
                format!("\n         {}", lines.join("\n         "))
            }
        })
        .unwrap_or_default();
    format!("failing: {}{first}", names.join(", "))
}

/// Course-wide checks: the workspace-hack covers every shared dependency,
/// every lab depends on it, and the README lists every lab.
fn global_checks(course: &Course, ready: &[Lab], checks: &mut Checks) {
    let root = &course.root;
    let hack = root.join("workspace-hack/Cargo.toml");
    if hack.is_file() {
        let missing = workspace_hack_missing(root);
        checks.global(
            "workspace-hack lists every shared dependency",
            missing.is_empty(),
            format!("add to workspace-hack/Cargo.toml: {}", missing.join(", ")),
        );
        for lab in ready {
            let text = fs::read_to_string(lab.dir.join("Cargo.toml")).unwrap_or_default();
            checks.add(
                lab.id(),
                "depends on workspace-hack",
                text.contains("workspace-hack"),
                "add `workspace-hack = { workspace = true }` to [dependencies], so testing this lab never rebuilds shared crates",
            );
        }
    }
    if let Ok(readme) = fs::read_to_string(root.join("README.md")) {
        let missing: Vec<String> = course
            .labs()
            .iter()
            .filter(|l| {
                !readme.contains(&format!("- [ ] {}", l.id()))
                    && !readme.contains(&format!("- [x] {}", l.id()))
            })
            .map(|l| l.id().to_string())
            .collect();
        let want = course.status_sentence();
        let have = crate::manifest::readme_status(&readme);
        checks.global(
            "README.md states the status that course.toml gives",
            have.as_deref() == Some(want.as_str()),
            match have {
                None => format!(
                    "README.md has no status sentence: add `{}`, the sentence `{want}`, and `{}`",
                    crate::manifest::STATUS_START,
                    crate::manifest::STATUS_END
                ),
                Some(have) => format!(
                    "README.md says \"{have}\" but course.toml says \"{want}\": put the latter between the status markers"
                ),
            },
        );
        let broken = broken_links(root, &readme);
        checks.global(
            "README.md links only to files that exist",
            broken.is_empty(),
            format!("fix or unlink: {}", broken.join(", ")),
        );
        checks.global(
            "README.md has a progress box for every lab",
            missing.is_empty(),
            format!(
                "add a `- [ ] <lab_id>: ...` line for: {}",
                missing.join(", ")
            ),
        );
    }
}

/// Relative Markdown link targets in `text` that do not exist under `root`.
pub fn broken_links(root: &Path, text: &str) -> Vec<String> {
    let mut broken = Vec::new();
    for (i, _) in text.match_indices("](") {
        let rest = &text[i + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split('#').next().unwrap_or("").trim();
        if target.is_empty()
            || target.contains("://")
            || target.starts_with("mailto:")
            || target.contains(' ')
        {
            continue;
        }
        if !root.join(target).exists() {
            broken.push(target.to_string());
        }
    }
    broken
}

/// External `[workspace.dependencies]` that `workspace-hack` does not list.
pub fn workspace_hack_missing(root: &Path) -> Vec<String> {
    let parse = |p: PathBuf| -> toml::Table {
        fs::read_to_string(p)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_default()
    };
    let ws = parse(root.join("Cargo.toml"));
    let hack = parse(root.join("workspace-hack/Cargo.toml"));
    let deps = ws
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    let listed = hack
        .get("dependencies")
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    deps.iter()
        .filter(|(_, v)| v.get("path").is_none())
        .filter(|(k, _)| !listed.contains_key(*k))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Required files, mutant count, package name, and committed src == problem.
/// What graders must not write themselves, because `labkit` has it: a
/// pattern in a grader's source, what it is, and what to use instead.
/// (rustlings' `dev check` is the model: an invariant the tool enforces,
/// with the fix in the message.)
const LABKIT_HAS: &[(&str, &str, &str)] = &[
    (
        "libc::kill",
        "a signal sent by hand (it races the reaper: the pid may be reused)",
        "Server::signal, Server::stop_with; Server and Session kill their whole process tree on drop",
    ),
    (
        "fn panic_message",
        "a panic-message helper",
        "labkit::wait::panic_message (or labkit::wait::try_within)",
    ),
    (
        ".source()",
        "an error-chain walk",
        "labkit::report::error_chain",
    ),
    (
        "/proc/net/",
        "the kernel's socket tables parsed by hand",
        "labkit::procfs::tcp_connection or labkit::procfs::sockets",
    ),
    (
        "RLIMIT_NOFILE",
        "the open-file limit set by hand",
        "labkit::client::many::ensure_nofile_for (this process) or ServerBuilder::nofile_limit (the server)",
    ),
    (
        "fn settle",
        "a poll-until-deadline helper",
        "labkit::wait::settle",
    ),
    (
        "UdpSocket::bind",
        "a UDP socket without deadlines or park detection",
        "labkit::udp::Probe",
    ),
    (
        "xorshift",
        "a payload generator",
        "labkit::data::text or labkit::data::binary",
    ),
];

/// The lines of a grader's source that re-implement what labkit has, as
/// "file:line: what; use ...".
pub fn reimplemented(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (pattern, what, instead) in LABKIT_HAS {
            if code.contains(pattern) {
                found.push(format!("{file}:{}: {what}; use {instead}", n + 1));
            }
        }
    }
    found
}

fn file_checks(course: &Course, lab: &Lab, checks: &mut Checks) {
    let id = lab.id();
    let mut again = Vec::new();
    for f in fsutil::list_files(&lab.dir.join("tests")) {
        if f.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(lab.dir.join("tests").join(&f)).unwrap_or_default();
            again.extend(reimplemented(&format!("tests/{}", f.display()), &text));
        }
    }
    checks.add(
        id,
        "the grader uses labkit instead of re-implementing it",
        again.is_empty(),
        again.join("; "),
    );
    let missing: Vec<&str> = [
        "Cargo.toml",
        "README.md",
        "hints.md",
        "problem",
        "src",
        "solution",
        "tests",
        "mutants",
    ]
    .into_iter()
    .filter(|f| !lab.dir.join(f).exists())
    .collect();
    checks.add(
        id,
        "has its files",
        missing.is_empty(),
        format!("missing in {}: {}", lab.rel, missing.join(", ")),
    );
    let problem = fsutil::list_files(&lab.dir.join("problem"));
    let solution = fsutil::list_files(&lab.dir.join("solution"));
    checks.add(id, "problem/ is not empty", !problem.is_empty(), "");
    checks.add(id, "solution/ is not empty", !solution.is_empty(), "");
    let n = mutant_paths(lab).len();
    checks.add(
        id,
        format!("ships at least {MIN_MUTANTS} mutants"),
        n >= MIN_MUTANTS,
        format!("found {n} in mutants/*.patch"),
    );
    let manifest = fs::read_to_string(lab.dir.join("Cargo.toml")).unwrap_or_default();
    let name_ok = manifest
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(|n| n == id))
        .unwrap_or(false);
    checks.add(
        id,
        "package is named after the lab",
        name_ok,
        format!("set `name = \"{id}\"` in {}/Cargo.toml", lab.rel),
    );
    match committed_dir_equal(&course.root, &lab.rel) {
        Some(Ok(())) => checks.add(id, "committed src/ equals problem/", true, ""),
        Some(Err(why)) => checks.add(id, "committed src/ equals problem/", false, why),
        None => {} // not a git checkout: nothing committed to compare
    }
}

/// Compares `<lab>/src` and `<lab>/problem` as committed in git (HEAD), so a
/// learner's work in progress never fails this check. `None` when the course
/// is not a git checkout or the lab is not committed yet.
fn committed_dir_equal(root: &Path, rel: &str) -> Option<Result<(), String>> {
    let ls = |dir: &str| -> Option<BTreeMap<String, String>> {
        let out = Command::new("git")
            .args(["ls-tree", "-r", "HEAD", "--", &format!("{rel}/{dir}/")])
            .current_dir(root)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let (meta, path) = l.split_once('\t')?;
                    let hash = meta.split_whitespace().nth(2)?;
                    Some((
                        path.strip_prefix(&format!("{rel}/{dir}/"))?.to_string(),
                        hash.to_string(),
                    ))
                })
                .collect(),
        )
    };
    let (src, problem) = (ls("src")?, ls("problem")?);
    if src.is_empty() && problem.is_empty() {
        return None;
    }
    if src == problem {
        Some(Ok(()))
    } else {
        let differ: Vec<&String> = src
            .keys()
            .chain(problem.keys())
            .filter(|k| src.get(*k) != problem.get(*k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Some(Err(format!(
            "the committed src/ must be the starter; these differ: {} (fix: rm -r src && cp -r problem src, then commit)",
            differ
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

pub fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fsutil::list_files(dir)
        .into_iter()
        .filter_map(|f| Some((f.clone(), fs::read(dir.join(&f)).ok()?)))
        .collect()
}

/// Makes `<tree>/<lab>/src` hold exactly `files`.
pub fn set_src(tree: &Path, lab: &Lab, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
    let src = tree.join(&lab.rel).join("src");
    for (rel, bytes) in files {
        fsutil::write_if_changed(&src.join(rel), bytes)?;
    }
    for f in fsutil::list_files(&src) {
        if !files.contains_key(&f) {
            fs::remove_file(src.join(f))?;
        }
    }
    Ok(())
}

fn mutant_paths(lab: &Lab) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(lab.dir.join("mutants"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "patch"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn load_mutants(lab: &Lab) -> Vec<Mutant> {
    let solution = read_tree(&lab.dir.join("solution"));
    mutant_paths(lab)
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let files = fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
                .and_then(|text| apply_patch(&solution, &text));
            Mutant { name, files }
        })
        .collect()
}

/// Applies a unified diff (one or more files, paths relative to `solution/`,
/// with optional `a/` `b/` prefixes and description lines before the first
/// `--- `) to the solution's files.
pub fn apply_patch(
    solution: &BTreeMap<PathBuf, Vec<u8>>,
    text: &str,
) -> Result<BTreeMap<PathBuf, Vec<u8>>, String> {
    let mut files = solution.clone();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            lines[i].starts_with("--- ") && lines.get(i + 1).is_some_and(|l| l.starts_with("+++ "))
        })
        .collect();
    if starts.is_empty() {
        return Err("not a unified diff: no `--- a/file` / `+++ b/file` header".into());
    }
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        let section: String = lines[start..end].concat();
        let target = lines[start + 1]["+++ ".len()..]
            .split('\t')
            .next()
            .unwrap_or("")
            .trim();
        let target = target.strip_prefix("b/").unwrap_or(target);
        let path = PathBuf::from(target);
        let original = files
            .get(&path)
            .ok_or_else(|| format!("the patch changes {target}, which solution/ does not have"))?;
        let original =
            String::from_utf8(original.clone()).map_err(|_| format!("{target} is not UTF-8"))?;
        let patch = diffy::Patch::from_str(&section)
            .map_err(|e| format!("cannot parse the diff of {target}: {e}"))?;
        let patched = diffy::apply(&original, &patch)
            .map_err(|e| format!("does not apply to solution/{target} any more ({e}); regenerate it from the current solution"))?;
        if patched == original {
            return Err(format!("changes nothing in {target}"));
        }
        files.insert(path, patched.into_bytes());
    }
    Ok(files)
}

/// `rustfmt --check` on the lab's solution, tests and benches (in place,
/// nothing is written).
fn rustfmt_check(lab: &Lab) -> Result<(), String> {
    let mut files = Vec::new();
    for part in ["solution", "tests", "benches"] {
        for f in fsutil::list_files(&lab.dir.join(part)) {
            if f.extension().is_some_and(|e| e == "rs") {
                files.push(lab.dir.join(part).join(f));
            }
        }
    }
    if files.is_empty() {
        return Ok(());
    }
    let out = Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .args(&files)
        .output()
        .map_err(|e| format!("cannot run rustfmt: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text
        .lines()
        .find(|l| l.starts_with("Diff in"))
        .unwrap_or("rustfmt reported differences")
        .to_string();
    Err(format!("{first} (run `cargo fmt`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_a_grader_reimplements_and_names_the_labkit_function() {
        let text = "fn f() {\n    unsafe { libc::kill(pid, 9) };\n    // libc::kill in a comment is fine\n    let t = std::fs::read_to_string(\"/proc/net/tcp\");\n}\n";
        let found = reimplemented("tests/x.rs", text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("tests/x.rs:2: a signal sent by hand"),
            "{}",
            found[0]
        );
        assert!(found[0].contains("Server::signal"), "{}", found[0]);
        assert!(
            found[1].contains("labkit::procfs::tcp_connection"),
            "{}",
            found[1]
        );
        assert!(reimplemented("t.rs", "use labkit::wait::settle;\n").is_empty());
    }

    // No grader of the real course re-implements labkit.
    #[test]
    fn no_grader_of_the_course_reimplements_labkit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let course = Course::load(root).unwrap();
        let mut found = Vec::new();
        for lab in course.ready_labs() {
            for f in fsutil::list_files(&lab.dir.join("tests")) {
                let text = fs::read_to_string(lab.dir.join("tests").join(&f)).unwrap_or_default();
                found.extend(reimplemented(
                    &format!("{}/tests/{}", lab.rel, f.display()),
                    &text,
                ));
            }
        }
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    fn sol() -> BTreeMap<PathBuf, Vec<u8>> {
        [(
            PathBuf::from("lib.rs"),
            b"fn a() -> u8 {\n    1\n}\n".to_vec(),
        )]
        .into()
    }

    #[test]
    fn applies_a_described_patch_with_prefixes() {
        let patch = "# returns 2\n--- a/lib.rs\n+++ b/lib.rs\n@@ -1,3 +1,3 @@\n fn a() -> u8 {\n-    1\n+    2\n }\n";
        let out = apply_patch(&sol(), patch).unwrap();
        assert_eq!(out[&PathBuf::from("lib.rs")], b"fn a() -> u8 {\n    2\n}\n");
    }

    #[test]
    fn a_stale_or_foreign_patch_is_an_error() {
        let stale =
            "--- a/lib.rs\n+++ b/lib.rs\n@@ -1,3 +1,3 @@\n fn a() -> u8 {\n-    7\n+    2\n }\n";
        assert!(
            apply_patch(&sol(), stale)
                .unwrap_err()
                .contains("does not apply")
        );
        let other = "--- a/x.rs\n+++ b/x.rs\n@@ -1 +1 @@\n-a\n+b\n";
        assert!(
            apply_patch(&sol(), other)
                .unwrap_err()
                .contains("does not have")
        );
        assert!(
            apply_patch(&sol(), "hello")
                .unwrap_err()
                .contains("not a unified diff")
        );
    }

    #[test]
    fn finds_broken_relative_links_only() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text =
            "[a](Cargo.toml) [b](src/main.rs#x) [c](https://x.org/y) [d](missing.md) [e](#top)";
        assert_eq!(broken_links(root, text), ["missing.md"]);
    }

    #[test]
    fn workspace_hack_lists_every_dependency() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert_eq!(workspace_hack_missing(root), Vec::<String>::new());
    }
}
