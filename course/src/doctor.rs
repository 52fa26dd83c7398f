//! `cargo course doctor`: checks what the course needs and says how to fix
//! each missing piece, in one line each.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::style::Style;

/// One finding: ok or not, what was found, and how to fix it.
struct Finding {
    ok: bool,
    /// Missing but only needed later (a warning, not a failure).
    optional: bool,
    what: String,
    fix: String,
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    out.status.success().then_some(text)
}

/// Finds a PostgreSQL server binary: on PATH, or where Debian and others put it.
pub fn find_postgres_bin(name: &str) -> Option<PathBuf> {
    if let Some(p) = which(name) {
        return Some(p);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.into_iter().rev().find(|p| p.is_file())
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn rust_version_required(root: &std::path::Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))?;
    let v = line.split('"').nth(1)?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The soft and hard limits on open files, from `/proc/self/limits`.
fn nofile_limits() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let parse = |v: Option<&str>| match v {
        Some("unlimited") => u64::MAX,
        Some(n) => n.parse().unwrap_or(0),
        None => 0,
    };
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            let mut f = l["Max open files".len()..].split_whitespace();
            (parse(f.next()), parse(f.next()))
        })
        .unwrap_or((0, 0))
}

/// Runs every check and prints the findings; returns whether all required
/// ones passed.
pub fn doctor(root: &std::path::Path, s: &Style) -> bool {
    let mut findings = Vec::new();

    // Rust.
    let rustc = run("rustc", &["--version"]).unwrap_or_default();
    let have = rustc.split_whitespace().nth(1).and_then(|v| {
        let mut p = v.split('.');
        Some((
            p.next()?.parse::<u32>().ok()?,
            p.next()?.parse::<u32>().ok()?,
        ))
    });
    let need = rust_version_required(root).unwrap_or((1, 94));
    findings.push(Finding {
        ok: have.is_some_and(|h| h >= need),
        optional: false,
        what: format!(
            "Rust {}.{} or newer (found: {})",
            need.0,
            need.1,
            rustc.trim()
        ),
        fix: "rustup update stable".into(),
    });

    // nextest: faster, per-test time limits; cargo test works without it.
    findings.push(Finding {
        ok: run("cargo", &["nextest", "--version"]).is_some(),
        optional: true,
        what: "cargo-nextest (per-test time limits in `cargo course`; plain cargo test is used without it)".into(),
        fix: "cargo install cargo-nextest --locked".into(),
    });

    // strace, and whether ptrace is allowed.
    let strace = which("strace");
    let traces = strace.is_some()
        && Command::new("strace")
            .args(["-o", "/dev/null", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
    findings.push(Finding {
        ok: traces,
        optional: false,
        what: if strace.is_none() {
            "strace (chapter 1 and the I/O labs): not installed".into()
        } else if !traces {
            "strace is installed but cannot trace here (ptrace is blocked)".into()
        } else {
            "strace, and ptrace is allowed".into()
        },
        fix: if strace.is_none() {
            "sudo apt-get install strace (Fedora: sudo dnf install strace)".into()
        } else {
            "in a container, run it with --cap-add=SYS_PTRACE; under WSL use WSL2".into()
        },
    });

    // PostgreSQL: a URL, or binaries to start a throwaway server.
    let pg_url = std::env::var("DATABASE_URL").ok();
    let pg_bins = find_postgres_bin("initdb").zip(find_postgres_bin("postgres"));
    findings.push(Finding {
        ok: pg_url.is_some() || pg_bins.is_some(),
        optional: true,
        what: match (&pg_url, &pg_bins) {
            (Some(u), _) => format!(
                "PostgreSQL: the tests use DATABASE_URL={u} (a new database per test, dropped after)"
            ),
            (None, Some((i, _))) => format!(
                "PostgreSQL: DATABASE_URL is not set, so the tests start a throwaway server from {}",
                i.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            (None, None) => {
                "PostgreSQL (chapter 4 on): neither DATABASE_URL nor initdb/postgres found".into()
            }
        },
        fix: "sudo apt-get install postgresql (or set DATABASE_URL=postgres://user@host/db)".into(),
    });

    // Redis.
    let redis_url = std::env::var("REDIS_URL").ok();
    let redis_bin = which("redis-server");
    findings.push(Finding {
        ok: redis_url.is_some() || redis_bin.is_some(),
        optional: true,
        what: match (&redis_url, &redis_bin) {
            (Some(u), _) => format!("Redis: the tests use REDIS_URL={u} (a key prefix per test)"),
            (None, Some(b)) => format!(
                "Redis: REDIS_URL is not set, so the tests start a throwaway server from {}",
                b.display()
            ),
            (None, None) => "Redis (chapter 4 on): neither REDIS_URL nor redis-server found".into(),
        },
        fix: "sudo apt-get install redis-server (or set REDIS_URL=redis://host:6379)".into(),
    });

    // Redis's tools: lab 24's grader runs redis-cli and starts its own
    // redis-server master (even with REDIS_URL set); the redis bench suite
    // runs redis-benchmark.
    for (tool, needed_for) in [
        ("redis-cli", "lab 24's grader"),
        ("redis-benchmark", "`cargo course bench redis`"),
    ] {
        let found = which(tool);
        findings.push(Finding {
            ok: found.is_some(),
            optional: true,
            what: match &found {
                Some(p) => format!("{tool} ({})", p.display()),
                None => format!("{tool} (for {needed_for}): not found"),
            },
            fix: "sudo apt-get install redis-server (it brings redis-cli and redis-benchmark; Fedora: redis)".into(),
        });
    }

    // wrk: the baseline of the http bench suite, which compares lab 36's
    // load generator with it.
    let wrk = which("wrk");
    findings.push(Finding {
        ok: wrk.is_some(),
        optional: true,
        what: match &wrk {
            Some(p) => format!("wrk ({})", p.display()),
            None => "wrk (for `cargo course bench http`, lab 36's baseline): not found".into(),
        },
        fix: "sudo apt-get install wrk (Fedora: sudo dnf install wrk; macOS: brew install wrk)"
            .into(),
    });

    // Open files: the many-connection labs need thousands.
    let (soft, hard) = nofile_limits();
    findings.push(Finding {
        ok: hard >= 16_384,
        optional: true,
        what: format!("open files limit: soft {soft}, hard {hard} (tests raise the soft limit up to the hard one; the many-connection labs need 16384)"),
        fix: "raise the hard limit: `ulimit -Hn 65536` as root, or LimitNOFILE in systemd, or `--ulimit nofile=65536` for a container".into(),
    });

    let mut all_ok = true;
    for f in &findings {
        let mark = if f.ok {
            s.green("ok  ")
        } else if f.optional {
            s.yellow("warn")
        } else {
            all_ok = false;
            s.red("FAIL")
        };
        println!("{mark} {}", f.what);
        if !f.ok {
            println!("     fix: {}", f.fix);
        }
    }
    println!(
        "{}",
        if all_ok {
            "everything the first chapters need is here (warnings matter only for later chapters)"
        } else {
            "fix the FAIL lines above, then run `cargo course doctor` again"
        }
    );
    all_ok
}
