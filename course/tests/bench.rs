//! Tests of `cargo course bench` itself, on servers whose behaviour is
//! known: loadgen's own echo (the ceiling), the same made slow on purpose
//! (a 2 ms sleep per read: well over ten times slower), and one that dies
//! mid-run. The bench must rank the slow one below, report the dead one as
//! failed with why, and finish rather than hang.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Builds loadgen (debug is enough to tell these servers apart).
fn loadgen() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "loadgen"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building loadgen failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug/loadgen")
}

#[test]
fn bench_ranks_a_slow_server_below_and_reports_a_dying_one() {
    let loadgen = loadgen();
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("course.toml"),
        "title = \"bench fixture\"\n[[chapter]]\nid = \"chapter_01_x\"\ntitle = \"X\"\n",
    )
    .unwrap();
    let l = loadgen.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_course"))
        .args(["bench", "echo", "--root"])
        .arg(dir.path())
        .args(["--loadgen", &l])
        .args(["--server", &format!("ceiling={l} serve-echo")])
        .args(["--server", &format!("slow={l} serve-echo --delay-us 2000")])
        .args([
            "--server",
            &format!("dies={l} serve-echo --die-after 10000"),
        ])
        .args([
            "--conns",
            "1,4",
            "--rounds",
            "1",
            "--warmup-ms",
            "100",
            "--duration-ms",
            "400",
            "--pin",
            "none",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!(
                "cargo course bench did not finish within 120 s: a dead server must fail its cell, not hang the run"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status.code(),
        Some(1),
        "a failed cell makes the exit code 1; output:\n{stdout}"
    );

    let csv = fs::read_to_string(dir.path().join(".course/bench/echo-src.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let rate = |server: &str, load: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r[0] == server && r[1] == load)
            .unwrap_or_else(|| panic!("no row for {server} {load} in\n{csv}"));
        assert_eq!(
            row[4], "true",
            "{server} {load} should have been measured:\n{csv}"
        );
        row[5].parse().unwrap()
    };
    for load in ["1 conns", "4 conns"] {
        let (fast, slow) = (rate("ceiling", load), rate("slow", load));
        assert!(fast > 0.0 && slow > 0.0, "{csv}");
        assert!(
            slow * 2.0 < fast,
            "at {load}, the slow server ({slow:.0} req/s) should rank well below the ceiling ({fast:.0} req/s)"
        );
    }
    let dead: Vec<_> = rows.iter().filter(|r| r[0] == "dies").collect();
    assert!(!dead.is_empty());
    for r in dead {
        assert_eq!(
            r[4], "false",
            "the dying server's cells must be failures:\n{csv}"
        );
        assert!(
            r[13..].join(",").contains("exited"),
            "the failure should say the server exited:\n{csv}"
        );
    }
    let svg = fs::read_to_string(dir.path().join(".course/bench/echo-src.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "a chart with lines:\n{svg}"
    );
    assert!(
        stdout.contains("vs ceiling") || stdout.contains("vs mio"),
        "a table:\n{stdout}"
    );
}
