//! The learner's commands: status, check, watch, hint, reset, sync.
//!
//! `status` grades every started lab in one build and one test run (a lab
//! whose code does not compile is reported with its first error, the others
//! are still graded) and caches results in `.course/status.json` by a hash of
//! each lab's sources, so an unchanged lab is never graded twice.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cargo::{self, Cargo};
use crate::fsutil;
use crate::manifest::{Course, Lab};
use crate::style::Style;

/// Where a lab stands for the learner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabState {
    Passed {
        tests: usize,
    },
    Failing {
        passed: usize,
        tests: usize,
        failing: Vec<String>,
    },
    DoesNotCompile {
        error: String,
    },
    NotStarted,
    Planned,
    /// The manifest says ready but the folder is missing or incomplete.
    Missing {
        what: String,
    },
}

impl LabState {
    fn describe(&self, s: &Style) -> String {
        match self {
            LabState::Passed { tests } => s.green(&format!("passed ({tests} tests)")),
            LabState::Failing { passed, tests, .. } => s.red(&format!(
                "failing ({} of {tests} tests fail)",
                tests - passed
            )),
            LabState::DoesNotCompile { error } => s.red(&format!(
                "failing: does not compile: {}",
                cargo::first_error_line(error)
            )),
            LabState::NotStarted => s.dim("not started"),
            LabState::Planned => s.dim("planned"),
            LabState::Missing { what } => s.red(&format!("missing: {what}")),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    labs: BTreeMap<String, (u64, LabState)>,
}

fn cache_path(root: &Path) -> PathBuf {
    root.join(".course/status.json")
}

/// The hash a lab's grade depends on: its code, its grader, its manifest and
/// the test-support crate.
fn lab_hash(course: &Course, lab: &Lab) -> u64 {
    fsutil::hash_paths(&[
        lab.dir.join("src"),
        lab.dir.join("tests"),
        lab.dir.join("Cargo.toml"),
        course.root.join("labkit/src"),
    ])
}

/// Grades every ready lab (using the cache) and returns each lab's state.
pub fn grade_all(course: &Course, cargo: &Cargo) -> Result<Vec<(Lab, LabState)>> {
    let mut cache: Cache = fs::read_to_string(cache_path(&course.root))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut states: Vec<(Lab, Option<LabState>)> = Vec::new();
    let mut to_grade: Vec<(usize, u64)> = Vec::new();
    for lab in course.labs() {
        let state = if !lab.is_ready() {
            Some(LabState::Planned)
        } else if !lab.dir.join("src").is_dir() || !lab.dir.join("problem").is_dir() {
            Some(LabState::Missing {
                what: format!("{}/src or problem/", lab.rel),
            })
        } else if fsutil::dirs_equal(&lab.dir.join("src"), &lab.dir.join("problem")) {
            Some(LabState::NotStarted)
        } else {
            let hash = lab_hash(course, &lab);
            match cache.labs.get(lab.id()) {
                Some((h, s)) if *h == hash => Some(s.clone()),
                _ => {
                    to_grade.push((states.len(), hash));
                    None
                }
            }
        };
        states.push((lab, state));
    }

    if !to_grade.is_empty() {
        let packages: Vec<String> = to_grade
            .iter()
            .map(|(i, _)| states[*i].0.package().to_string())
            .collect();
        let errors = cargo.build_tests(&packages, "building your labs")?;
        let compiled: Vec<String> = packages
            .iter()
            .filter(|p| !errors.contains_key(*p))
            .cloned()
            .collect();
        let results = cargo::by_package(cargo.run_tests(&compiled, "default", "grading")?);
        for (i, hash) in to_grade {
            let lab = &states[i].0;
            let state = if let Some(err) = errors.get(lab.package()) {
                LabState::DoesNotCompile { error: err.clone() }
            } else {
                let rs = results.get(lab.package()).cloned().unwrap_or_default();
                let passed = rs.iter().filter(|r| r.passed).count();
                if !rs.is_empty() && passed == rs.len() {
                    LabState::Passed { tests: rs.len() }
                } else {
                    LabState::Failing {
                        passed,
                        tests: rs.len(),
                        failing: rs
                            .iter()
                            .filter(|r| !r.passed)
                            .map(|r| r.name.clone())
                            .collect(),
                    }
                }
            };
            cache
                .labs
                .insert(lab.id().to_string(), (hash, state.clone()));
            states[i].1 = Some(state);
        }
        let _ = fs::create_dir_all(course.root.join(".course"));
        let _ = fs::write(
            cache_path(&course.root),
            serde_json::to_string_pretty(&cache)?,
        );
    }
    Ok(states
        .into_iter()
        .map(|(l, s)| (l, s.unwrap_or(LabState::NotStarted)))
        .collect())
}

/// `cargo course` / `cargo course status`.
pub fn status(course: &Course, cargo: &Cargo, s: &Style) -> Result<()> {
    let states = grade_all(course, cargo)?;
    println!("{}", s.bold(&course.title));
    let mut chapter = 0;
    let mut topic = String::new();
    for (lab, state) in &states {
        if lab.chapter_index != chapter {
            chapter = lab.chapter_index;
            println!(
                "\n{}",
                s.bold(&format!("Chapter {chapter}: {}", lab.chapter_title))
            );
        }
        if lab.topic_title != topic {
            topic = lab.topic_title.clone();
            println!("  {}", s.dim(&topic));
        }
        println!(
            "    {:<26} {:<8} {}",
            lab.id(),
            lab.entry.kind.as_str(),
            state.describe(s)
        );
        if let LabState::Failing { failing, .. } = state
            && let Some(first) = failing.first()
        {
            println!(
                "    {:<35} {}",
                "",
                s.dim(&format!("first failing test: {first}"))
            );
        }
    }
    let count = |f: fn(&LabState) -> bool| states.iter().filter(|(_, st)| f(st)).count();
    let passed = count(|s| matches!(s, LabState::Passed { .. }));
    let failing = count(|s| {
        matches!(
            s,
            LabState::Failing { .. } | LabState::DoesNotCompile { .. }
        )
    });
    let not_started = count(|s| matches!(s, LabState::NotStarted));
    let planned = count(|s| matches!(s, LabState::Planned));
    println!(
        "\n{} of {} labs passed, {failing} failing, {not_started} not started, {planned} planned",
        passed,
        states.len()
    );
    let next = states.iter().find(|(_, st)| {
        matches!(
            st,
            LabState::Failing { .. } | LabState::DoesNotCompile { .. } | LabState::NotStarted
        )
    });
    match next {
        Some((lab, _)) => println!(
            "next: {} ({}); read {}/README.md, then `cargo course check {}`",
            s.bold(lab.id()),
            lab.entry.title,
            lab.rel,
            lab.number
        ),
        None if planned > 0 => println!("every lab built so far passes; more are planned"),
        None => println!("every lab passes: well done"),
    }
    Ok(())
}

/// `cargo course check <lab>`: the learner's own `cargo test` in the lab.
pub fn check(course: &Course, lab: &Lab, s: &Style) -> Result<bool> {
    ensure_ready(lab)?;
    println!(
        "{}",
        s.dim(&format!(
            "[course] grading {}: cargo test in {}",
            lab.id(),
            lab.rel
        ))
    );
    let cargo = Cargo {
        root: course.root.clone(),
        target_dir: None,
        progress: false,
    };
    let passed = cargo.test_in(&lab.dir)?;
    if passed {
        println!(
            "{} {} passes. Compare with its solution/, then `cargo course sync` ticks it in README.md.",
            s.green("[course]"),
            lab.id()
        );
    } else {
        println!(
            "{} {} is not there yet: read the first failing test's [test] and [hint] lines above. `cargo course hint {}` gives a hint.",
            s.red("[course]"),
            lab.id(),
            lab.number
        );
    }
    Ok(passed)
}

/// `cargo course watch [<lab>]`: re-runs `check` whenever the lab's sources change.
pub fn watch(course: &Course, lab: &Lab, s: &Style) -> Result<()> {
    use notify::{RecursiveMode, Watcher};
    ensure_ready(lab)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })?;
    for part in ["src", "tests"] {
        watcher.watch(&lab.dir.join(part), RecursiveMode::Recursive)?;
    }
    loop {
        check(course, lab, s)?;
        println!(
            "{}",
            s.dim(&format!(
                "[course] watching {}/src and tests/; Ctrl-C to stop",
                lab.rel
            ))
        );
        // Wait for a change, then let a burst of saves settle.
        rx.recv()?;
        while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
    }
}

/// `cargo course hint <lab>`: the next hint, one at a time.
pub fn hint(course: &Course, lab: &Lab, s: &Style) -> Result<()> {
    ensure_ready(lab)?;
    let text = fs::read_to_string(lab.dir.join("hints.md")).context("this lab has no hints.md")?;
    let hints = split_hints(&text);
    if hints.is_empty() {
        bail!("{}/hints.md has no `## ` sections", lab.rel);
    }
    let state = course.root.join(".course/hints").join(lab.id());
    let shown: usize = fs::read_to_string(&state)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if shown >= hints.len() {
        println!(
            "{}",
            s.dim(&format!(
                "all {} hints shown (`rm {}` to start over). Still stuck? Read the test that fails, then solution/ as a last resort.",
                hints.len(),
                state.display()
            ))
        );
        return Ok(());
    }
    println!(
        "{}\n",
        s.bold(&format!(
            "{}: hint {} of {}",
            lab.id(),
            shown + 1,
            hints.len()
        ))
    );
    println!("{}", hints[shown].trim());
    fs::create_dir_all(state.parent().expect("has a parent"))?;
    fs::write(&state, (shown + 1).to_string())?;
    Ok(())
}

/// Splits `hints.md` into its `## ` sections.
pub fn split_hints(text: &str) -> Vec<String> {
    let mut hints: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            hints.push(String::new());
        }
        if let Some(h) = hints.last_mut() {
            h.push_str(line);
            h.push('\n');
        }
    }
    hints
}

/// `cargo course reset <lab>`: saves `src/` under `.course/backup/`, then
/// copies `problem/` back. Returns the backup folder, if one was made.
pub fn reset(course: &Course, lab: &Lab) -> Result<Option<PathBuf>> {
    ensure_ready(lab)?;
    let src = lab.dir.join("src");
    let problem = lab.dir.join("problem");
    if fsutil::dirs_equal(&src, &problem) {
        println!("{}/src already equals problem/: nothing to reset", lab.rel);
        return Ok(None);
    }
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
    let mut backup = course
        .root
        .join(".course/backup")
        .join(lab.id())
        .join(&stamp);
    let mut n = 1;
    while backup.exists() {
        n += 1;
        backup = course
            .root
            .join(".course/backup")
            .join(lab.id())
            .join(format!("{stamp}-{n}"));
    }
    if src.exists() {
        fsutil::copy_dir(&src, &backup)
            .with_context(|| format!("cannot back up {} to {}", src.display(), backup.display()))?;
        // Only once the copy is complete do we touch the learner's work.
        fs::remove_dir_all(&src)?;
    }
    fsutil::copy_dir(&problem, &src)?;
    println!("saved your {}/src to {}", lab.rel, backup.display());
    println!("{}/src is the starter again", lab.rel);
    Ok(Some(backup))
}

/// `cargo course sync`: ticks the README checkbox of every lab that passes.
pub fn sync(course: &Course, cargo: &Cargo) -> Result<()> {
    let states = grade_all(course, cargo)?;
    let readme = course.root.join("README.md");
    let text = fs::read_to_string(&readme).context("cannot read README.md")?;
    let passed: Vec<&str> = states
        .iter()
        .filter(|(_, s)| matches!(s, LabState::Passed { .. }))
        .map(|(l, _)| l.id())
        .collect();
    let (new, ticked) = tick(&text, &passed);
    if ticked.is_empty() {
        println!("README.md is up to date ({} labs pass)", passed.len());
    } else {
        fs::write(&readme, new)?;
        println!("ticked in README.md: {}", ticked.join(", "));
    }
    Ok(())
}

/// Ticks `- [ ] <lab_id>` lines for the given labs; returns the new text and
/// the labs it ticked.
pub fn tick(text: &str, labs: &[&str]) -> (String, Vec<String>) {
    let mut ticked = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let id = trimmed
            .strip_prefix("- [ ] ")
            .and_then(|rest| rest.split(|c: char| c == ':' || c.is_whitespace()).next());
        match id {
            Some(id) if labs.contains(&id) => {
                out.push_str(indent);
                out.push_str("- [x] ");
                out.push_str(&trimmed["- [ ] ".len()..]);
                ticked.push(id.to_string());
            }
            _ => out.push_str(line),
        }
    }
    (out, ticked)
}

fn ensure_ready(lab: &Lab) -> Result<()> {
    if !lab.is_ready() {
        bail!(
            "{} is planned but not built yet; `cargo course` shows the labs you can do now",
            lab.id()
        );
    }
    if !lab.dir.is_dir() {
        bail!("{} is missing its folder {}", lab.id(), lab.rel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_marks_only_passing_labs_and_keeps_the_rest() {
        let text = "# x\n- [ ] lab_01_mini_cat: [cat](a)\n- [ ] lab_02_parallel_sum: sum\n  - [ ] lab_03_strace: s\n- [ ] Theory: t\n";
        let (new, ticked) = tick(text, &["lab_01_mini_cat", "lab_03_strace"]);
        assert_eq!(ticked, ["lab_01_mini_cat", "lab_03_strace"]);
        assert_eq!(
            new,
            "# x\n- [x] lab_01_mini_cat: [cat](a)\n- [ ] lab_02_parallel_sum: sum\n  - [x] lab_03_strace: s\n- [ ] Theory: t\n"
        );
        assert_eq!(
            tick(&new, &["lab_01_mini_cat"]).1.len(),
            0,
            "already ticked"
        );
    }

    #[test]
    fn hints_split_on_level_two_headings() {
        let h = split_hints("# Hints\nintro\n## Hint 1\na?\n## Hint 2\nb?\n");
        assert_eq!(h, ["## Hint 1\na?\n", "## Hint 2\nb?\n"]);
    }
}
