//! End-to-end tests of the `course` binary on a tiny fixture course built in
//! a temporary folder: one library lab whose grader, solution, starter and
//! mutants we can make good or bad at will.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST: &str = r#"
title = "Fixture course"
[[chapter]]
id = "chapter_01_x"
title = "X"
[[chapter.topic]]
id = "01_t"
title = "T"
[[chapter.topic.lab]]
id = "lab_01_add"
title = "add"
kind = "library"
status = "ready"
[[chapter.topic.lab]]
id = "lab_02_later"
title = "later"
kind = "library"
status = "planned"
"#;

const LAB: &str = "chapter_01_x/01_t/lab_01_add";
const STARTER: &str = "pub fn add(a: u64, b: u64) -> u64 {\n    todo!(\"add {a} and {b}\")\n}\n";
const SOLUTION: &str = "/// Adds two numbers.\npub fn add(a: u64, b: u64) -> u64 {\n    a + b\n}\n";
const TESTS: &str = "use add::add;\n\n#[test]\nfn test_01_adds_small_numbers() {\n    assert_eq!(add(2, 3), 5);\n}\n\n#[test]\nfn test_02_adds_zero() {\n    assert_eq!(add(7, 0), 7);\n}\n";

fn mutant(description: &str, new_body: &str) -> String {
    format!(
        "# {description}\n--- a/lib.rs\n+++ b/lib.rs\n@@ -1,4 +1,4 @@\n /// Adds two numbers.\n pub fn add(a: u64, b: u64) -> u64 {{\n-    a + b\n+    {new_body}\n }}\n"
    )
}

/// Writes the fixture course into a new temporary folder and commits it.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    w(
        "Cargo.toml",
        "[workspace]\nresolver = \"3\"\nmembers = [\"chapter_*/*/lab_*\"]\n",
    );
    w("course.toml", MANIFEST);
    w(".gitignore", "/target\n/.course\n");
    w(
        "README.md",
        concat!(
            "# Fixture\n",
            "<!-- status: written from course.toml, checked by `cargo course verify` -->\n",
            "Chapter 1 has 1 of its 2 labs ready (labs 01 to 02). Labs not built yet are listed as *planned*, and `cargo course` shows them as such.\n",
            "<!-- /status -->\n",
            "- [ ] lab_01_add: add\n- [ ] lab_02_later: later (planned)\n"
        ),
    );
    w(
        &format!("{LAB}/Cargo.toml"),
        "[package]\nname = \"lab_01_add\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\nname = \"add\"\npath = \"src/lib.rs\"\n",
    );
    w(&format!("{LAB}/README.md"), "# add\n");
    w(
        &format!("{LAB}/hints.md"),
        "# Hints\n## Hint 1\nWhat does + do?\n## Hint 2\nTry a + b.\n",
    );
    w(&format!("{LAB}/problem/lib.rs"), STARTER);
    w(&format!("{LAB}/src/lib.rs"), STARTER);
    w(&format!("{LAB}/solution/lib.rs"), SOLUTION);
    w(&format!("{LAB}/tests/add.rs"), TESTS);
    w(
        &format!("{LAB}/mutants/01_subtracts.patch"),
        &mutant("subtracts", "a.wrapping_sub(b)"),
    );
    w(
        &format!("{LAB}/mutants/02_doubles_a.patch"),
        &mutant("ignores b", "a + a"),
    );
    w(
        &format!("{LAB}/mutants/03_off_by_one.patch"),
        &mutant("off by one", "a + b + 1"),
    );
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(
        root,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "fixture",
        ],
    );
    dir
}

fn git(root: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?} failed");
}

/// Runs `course --root <root> <args>`; returns (exit code, stdout + stderr).
fn course(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_course"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or("")
}

#[test]
fn verify_passes_a_good_lab() {
    let dir = fixture();
    let (code, out) = course(dir.path(), &["verify"]);
    assert_eq!(code, 0, "verify should pass the fixture lab:\n{out}");
    assert!(last_line(&out).ends_with(" passed, 0 failed"), "{out}");
    assert!(out.contains("3 of 3 mutants caught"), "{out}");
    assert!(out.contains("starter: 0 of 2 pass"), "{out}");
    // The learner's tree is untouched: src is still the starter.
    assert_eq!(
        fs::read_to_string(dir.path().join(LAB).join("src/lib.rs")).unwrap(),
        STARTER
    );
}

#[test]
fn verify_fails_a_wrong_solution_an_uncaught_mutant_and_a_passing_starter() {
    let dir = fixture();
    let lab = dir.path().join(LAB);
    // A wrong solution, a mutant the grader cannot see (it only changes a
    // value no test checks), and a starter that already passes one test.
    fs::write(
        lab.join("solution/lib.rs"),
        SOLUTION.replace("a + b", "a * b"),
    )
    .unwrap();
    let (code, out) = course(dir.path(), &["verify", "01"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("solution passes every test: failing: test_01_adds_small_numbers"),
        "{out}"
    );
    assert!(
        out.contains("does not apply"),
        "mutants made for the old solution no longer apply:\n{out}"
    );

    fs::write(lab.join("solution/lib.rs"), SOLUTION).unwrap();
    fs::write(
        lab.join("mutants/03_off_by_one.patch"),
        mutant("saturates", "a.saturating_add(b)"),
    )
    .unwrap();
    fs::write(
        lab.join("problem/lib.rs"),
        "pub fn add(a: u64, b: u64) -> u64 {\n    a\n}\n",
    )
    .unwrap();
    let (code, out) = course(dir.path(), &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mutant 03_off_by_one is caught: every one of 2 tests passes"),
        "{out}"
    );
    assert!(
        out.contains("these tests pass on the untouched starter"),
        "{out}"
    );
    assert!(out.contains("test_02_adds_zero"), "{out}");
    assert!(!last_line(&out).ends_with(" 0 failed"), "{out}");
}

#[test]
fn reset_keeps_the_learners_work_in_a_backup() {
    let dir = fixture();
    let src = dir.path().join(LAB).join("src/lib.rs");
    fs::write(&src, "// my attempt\n").unwrap();
    let (code, out) = course(dir.path(), &["reset", "add"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(&src).unwrap(), STARTER);
    let backups: Vec<PathBuf> = fs::read_dir(dir.path().join(".course/backup/lab_01_add"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{out}");
    assert_eq!(
        fs::read_to_string(backups[0].join("lib.rs")).unwrap(),
        "// my attempt\n"
    );
    assert!(
        out.contains(&backups[0].display().to_string()),
        "reset must say where the backup went:\n{out}"
    );
}

#[test]
fn status_hint_and_unknown_labs() {
    let dir = fixture();
    let (code, out) = course(dir.path(), &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("lab_01_add") && out.contains("not started"),
        "{out}"
    );
    assert!(
        out.contains("lab_02_later") && out.contains("planned"),
        "{out}"
    );
    assert!(out.contains("0 of 2 labs passed"), "{out}");

    // A lab that does not compile is reported with its first error.
    fs::write(
        dir.path().join(LAB).join("src/lib.rs"),
        "pub fn add(a: u64, b: u64) -> u64 { a + }\n",
    )
    .unwrap();
    let (_, out) = course(dir.path(), &["status"]);
    assert!(out.contains("failing: does not compile: error"), "{out}");

    // A passing lab, and sync ticks it.
    fs::write(dir.path().join(LAB).join("src/lib.rs"), SOLUTION).unwrap();
    let (_, out) = course(dir.path(), &["status"]);
    assert!(out.contains("passed (2 tests)"), "{out}");
    let (_, out) = course(dir.path(), &["sync"]);
    assert!(out.contains("ticked in README.md: lab_01_add"), "{out}");
    let readme = fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(
        readme.contains("- [x] lab_01_add") && readme.contains("- [ ] lab_02_later"),
        "{readme}"
    );

    let (_, out) = course(dir.path(), &["hint", "1"]);
    assert!(
        out.contains("hint 1 of 2") && out.contains("What does + do?"),
        "{out}"
    );
    let (_, out) = course(dir.path(), &["hint", "1"]);
    assert!(out.contains("hint 2 of 2"), "{out}");

    let (code, out) = course(dir.path(), &["check", "ad"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no lab called `ad`; did you mean lab_01_add"),
        "{out}"
    );
}
