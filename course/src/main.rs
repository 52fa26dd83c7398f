//! `cargo course`: grade your labs, track your progress, verify the course.
//!
//! Run through the alias in `.cargo/config.toml`, so there is nothing to
//! install. Layout:
//!
//! | module | job |
//! |---|---|
//! | `manifest` | reads `course.toml`, finds labs by id, number or name |
//! | `cargo` | builds with a progress bar, runs graders, parses per-test results |
//! | `learner` | status, check, watch, hint, reset, sync |
//! | `verify` | the course's own test suite (solutions pass, starters fail, mutants caught) |
//! | `bench` | the servers under load from `loadgen`: table, CSV, chart |
//! | `chart` | the bench's SVG chart |
//! | `doctor` | checks prerequisites and says how to fix each |
//! | `fsutil` | list, compare, hash and mirror folders |
//!
//! Errors are one sentence on stderr and exit code 2; a grade that is not
//! green (a failing lab under `check`, a failed check under `verify`) is
//! exit code 1.

mod bench;
mod cargo;
mod chart;
mod doctor;
mod fsutil;
mod learner;
mod manifest;
mod style;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use manifest::Course;
use style::Style;

#[derive(Parser)]
#[command(
    name = "cargo course",
    bin_name = "cargo course",
    version,
    about = "Grade your labs, track your progress, verify the course."
)]
struct Cli {
    /// The course folder (default: the nearest folder upwards holding course.toml).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Grade every lab and show your progress (the default).
    Status,
    /// Run one lab's grader: `check 01`, `check lab_01`, `check mini_cat`.
    Check { lab: String },
    /// Re-run a lab's grader on every save.
    Watch {
        /// The lab (default: the next lab to do).
        lab: Option<String>,
    },
    /// Show the next hint for a lab, one at a time.
    Hint { lab: String },
    /// Save your src/ under .course/backup/ and restore the starter.
    Reset { lab: String },
    /// Tick the README checkbox of every lab that passes.
    Sync,
    /// Check prerequisites (Rust, strace, PostgreSQL, Redis, open-file limit).
    Doctor,
    /// Measure the servers under load: `bench echo` (labs 09-12), `bench chat` (lab 13) or `bench redis` (lab 24, against redis-server); or a load generator: `bench http` (lab 36, against wrk).
    Bench(bench::Options),
    /// The course's own test suite: solutions pass, starters fail, mutants are caught.
    Verify {
        /// Labs to verify (default: every ready lab).
        labs: Vec<String>,
    },
}

fn main() -> ExitCode {
    // `cargo course ...` runs `course course ...` when invoked as a cargo
    // subcommand binary; drop the repeated word.
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("course") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    let style = Style::detect();
    match run(cli, &style) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
            }
            eprintln!("{} {msg}", style.red("error:"));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, style: &Style) -> Result<bool> {
    let root = match cli.root {
        Some(r) => r
            .canonicalize()
            .with_context(|| format!("no folder {}", r.display()))?,
        None => {
            let cwd = std::env::current_dir()?;
            manifest::find_root(&cwd)
                .context("not inside the course: no course.toml in this folder or any above it (run from the course folder, or pass --root)")?
        }
    };
    if let Some(Cmd::Doctor) = cli.command {
        return Ok(doctor::doctor(&root, style));
    }
    let course = Course::load(&root)?;
    let cargo = cargo::Cargo {
        root: root.clone(),
        target_dir: None,
        progress: style.interactive(),
    };
    match cli.command.unwrap_or(Cmd::Status) {
        Cmd::Status => learner::status(&course, &cargo, style).map(|()| true),
        Cmd::Check { lab } => learner::check(&course, &course.find(&lab)?, style),
        Cmd::Watch { lab } => {
            let lab = match lab {
                Some(l) => course.find(&l)?,
                None => next_lab(&course, &cargo)?,
            };
            learner::watch(&course, &lab, style).map(|()| true)
        }
        Cmd::Hint { lab } => learner::hint(&course, &course.find(&lab)?, style).map(|()| true),
        Cmd::Reset { lab } => learner::reset(&course, &course.find(&lab)?).map(|_| true),
        Cmd::Sync => learner::sync(&course, &cargo).map(|()| true),
        Cmd::Doctor => unreachable!("handled above"),
        Cmd::Bench(options) => bench::bench(&course, &options, style),
        Cmd::Verify { labs } => {
            let selected = if labs.is_empty() {
                course.ready_labs()
            } else {
                let mut v = Vec::new();
                for l in &labs {
                    let lab = course.find(l)?;
                    if !lab.is_ready() {
                        anyhow::bail!(
                            "{} is planned, not built yet, so there is nothing to verify",
                            lab.id()
                        );
                    }
                    v.push(lab);
                }
                v
            };
            verify::verify(&course, &selected, style)
        }
    }
}

/// The first lab that is not passed yet, for `watch` without an argument.
fn next_lab(course: &Course, cargo: &cargo::Cargo) -> Result<manifest::Lab> {
    let states = learner::grade_all(course, cargo)?;
    states
        .into_iter()
        .find(|(l, s)| l.is_ready() && !matches!(s, learner::LabState::Passed { .. }))
        .map(|(l, _)| l)
        .context("every ready lab passes: name a lab to watch")
}
