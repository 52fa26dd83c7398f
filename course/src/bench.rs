//! `cargo course bench echo|chat`: the servers of the performance core
//! under load, measured from a separate process.
//!
//! # How a run works
//!
//! 1. **Build.** The course is mirrored into `.course/bench/tree` (the
//!    learner's `src/`, or with `--solution` the references), and the
//!    servers and `loadgen` are built in release mode into
//!    `.course/bench/target`, so a bench never touches the binaries the
//!    graders run.
//! 2. **Cells.** One cell is one server under one load: a fresh server
//!    (its open-file limit raised so 10,000 connections fit), then
//!    `loadgen`, which connects everything, warms up and measures. The
//!    server's CPU time is read from `/proc/<pid>/stat` when the window
//!    opens and when it closes (`loadgen` says `measuring` and `done`),
//!    its peak RSS (`VmHWM`) and thread count from `/proc/<pid>/status`
//!    at the end. A cell that fails (the server dies, stalls, refuses)
//!    is reported as failed, with why, and the run goes on; every cell has
//!    a deadline.
//! 3. **Rounds.** Every server runs every load once per round, servers in a
//!    rotating order, so a slow spell of the machine does not always hit
//!    the same server. The table shows medians over rounds and each
//!    server's ratio to the baseline (the mio server) *of the same round*:
//!    ratios from one run are comparable; absolute numbers across runs or
//!    machines are not.
//! 4. **Output.** A table on the terminal, every cell in a CSV, and an SVG
//!    chart, under `.course/bench/`.
//!
//! By default server and client are pinned to the same CPU (`--pin 0`). On
//! a small VM, waking a thread on another vCPU costs tens of microseconds,
//! which would dominate a 64-byte round trip and measure the hypervisor,
//! not the server. `--pin none` leaves placement to the kernel; `--pin 0,1`
//! puts the server on CPU 0 and the client on CPU 1.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::chart;
use crate::fsutil;
use crate::manifest::Course;
use crate::style::Style;

/// What to run: parsed from the command line in `main`.
#[derive(Debug, Clone)]
pub struct Options {
    pub suite: String,
    pub solution: bool,
    pub quick: bool,
    pub pin: String,
    pub rounds: Option<usize>,
    /// Connection (echo) or receiver (chat) counts; empty for the defaults.
    pub conns: Vec<u64>,
    pub warmup_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    /// Use this loadgen and these servers instead of building (the bench
    /// tool's own tests): `name=program arg...`.
    pub loadgen: Option<PathBuf>,
    pub servers: Vec<String>,
}

/// A server to measure: a name and the command before its address.
#[derive(Debug, Clone)]
struct ServerSpec {
    name: String,
    program: PathBuf,
    args: Vec<String>,
}

/// One load: what `loadgen` is told, and where it sits on the chart.
#[derive(Debug, Clone)]
struct Load {
    label: String,
    /// Connections or receivers: the chart's x axis.
    x: u64,
    /// On the chart (ping-pong and saturation loads), or only in the table.
    charted: bool,
    args: Vec<String>,
}

/// What one cell measured.
#[derive(Debug, Clone, Default)]
struct Metrics {
    /// Requests (echo) or deliveries (chat) per second.
    rate: f64,
    mb_per_s: f64,
    /// Fan-out lines per second (chat).
    lines_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
    peak_rss_kib: u64,
    threads: u64,
}

#[derive(Debug, Clone)]
struct Cell {
    server: String,
    load: usize,
    round: usize,
    result: Result<Metrics, String>,
}

/// The suites: which labs, which servers, which loads.
struct Suite {
    /// (server name, lab id, binary name); "ceiling" is loadgen's own echo.
    servers: Vec<(&'static str, &'static str, &'static str)>,
    baseline: &'static str,
    /// What `rate` is called in the table.
    unit: &'static str,
}

fn suite(name: &str) -> Result<Suite> {
    Ok(match name {
        "echo" => Suite {
            servers: vec![
                ("ceiling", "", ""),
                ("blocking", "lab_09_blocking_echo", "blocking_echo"),
                ("mio", "lab_10_mio_echo", "mio_echo"),
                ("tokio", "lab_11_tokio_echo", "tokio_echo"),
                ("epoll", "lab_12_epoll_by_hand", "epoll_echo"),
            ],
            baseline: "mio",
            unit: "req/s",
        },
        "chat" => Suite {
            servers: vec![("chat", "lab_13_chat_server", "chat_server")],
            baseline: "chat",
            unit: "deliveries/s",
        },
        other => bail!("no bench suite {other:?}: the suites are echo and chat"),
    })
}

pub fn bench(course: &Course, o: &Options, s: &Style) -> Result<bool> {
    let spec = suite(&o.suite)?;
    let out_dir = course.root.join(".course/bench");
    let (loadgen, mut servers) = match &o.loadgen {
        Some(l) => (l.clone(), Vec::new()),
        None => build(course, &spec, o)?,
    };
    for raw in &o.servers {
        let (name, cmd) = raw
            .split_once('=')
            .context("--server takes name=program [args]")?;
        let mut words = cmd.split_whitespace().map(str::to_string);
        let program = PathBuf::from(words.next().context("--server needs a program")?);
        servers.push(ServerSpec {
            name: name.to_string(),
            program,
            args: words.collect(),
        });
    }
    if servers.is_empty() {
        bail!("no servers to measure");
    }
    let baseline = if servers.iter().any(|s| s.name == spec.baseline) {
        spec.baseline.to_string()
    } else {
        servers[0].name.clone()
    };
    let ceiling = servers.iter().any(|s| s.name == "ceiling");

    let rounds = o.rounds.unwrap_or(if o.quick { 1 } else { 3 }).max(1);
    let warmup = o.warmup_ms.unwrap_or(if o.quick { 300 } else { 1000 });
    let duration = o.duration_ms.unwrap_or(if o.quick { 1000 } else { 3000 });
    let timing = vec![
        "--warmup-ms".to_string(),
        warmup.to_string(),
        "--duration-ms".to_string(),
        duration.to_string(),
    ];
    let pin = Pin::parse(&o.pin)?;
    let started = Instant::now();
    println!(
        "{} {} on {}, {} round(s), {warmup} ms warm-up + {duration} ms per cell, pinned: {}",
        s.bold("bench"),
        o.suite,
        if o.solution {
            "the reference solutions"
        } else {
            "your src/"
        },
        rounds,
        pin.describe()
    );

    let mut loads = base_loads(&o.suite, o, &timing);
    let mut cells = run_cells(
        &servers,
        &loadgen,
        &loads,
        0,
        rounds,
        &pin,
        warmup + duration,
        s,
    );
    if o.suite == "chat" {
        // Latency at a load the server can carry: half the chat-room
        // maximum, offered at a steady rate by the same ten senders.
        let mut extra = Vec::new();
        for (i, l) in loads.iter().enumerate().filter(|(_, l)| l.charted) {
            let max = median(
                cells
                    .iter()
                    .filter(|c| c.load == i)
                    .filter_map(|c| c.result.as_ref().ok())
                    .map(|m| m.lines_per_s),
            );
            if let Some(max) = max.filter(|m| *m >= 2.0) {
                let rate = (max / 2.0) as u64;
                let mut args = vec![
                    "chat".into(),
                    "--receivers".into(),
                    l.x.to_string(),
                    "--senders".into(),
                    "10".into(),
                    "--rate".into(),
                    rate.to_string(),
                ];
                args.extend(timing.clone());
                extra.push(Load {
                    label: format!("{} rcv @ {rate} lines/s", l.x),
                    x: l.x,
                    charted: false,
                    args,
                });
            }
        }
        let first = loads.len();
        loads.extend(extra);
        cells.extend(run_cells(
            &servers,
            &loadgen,
            &loads[first..],
            first,
            rounds,
            &pin,
            warmup + duration,
            s,
        ));
    }

    fs::create_dir_all(&out_dir)?;
    let tag = format!(
        "{}-{}",
        o.suite,
        if o.solution { "solution" } else { "src" }
    );
    let csv = out_dir.join(format!("{tag}.csv"));
    fs::write(&csv, to_csv(&cells, &loads))?;
    let svg = out_dir.join(format!("{tag}.svg"));
    fs::write(
        &svg,
        chart_svg(&o.suite, &servers, &loads, &cells, spec.unit),
    )?;

    print_table(&servers, &loads, &cells, &baseline, ceiling, spec.unit, s);
    println!(
        "\n{} cells in {:.0} s; every cell: {}\nchart: {}\n{}",
        cells.len(),
        started.elapsed().as_secs_f64(),
        csv.display(),
        svg.display(),
        s.dim("medians over rounds; ratios are per round, then the median: compare ratios within one run, never absolute numbers across runs")
    );
    Ok(cells.iter().all(|c| c.result.is_ok()))
}

fn base_loads(suite: &str, o: &Options, timing: &[String]) -> Vec<Load> {
    let mut loads = Vec::new();
    if suite == "echo" {
        let conns = if !o.conns.is_empty() {
            o.conns.clone()
        } else if o.quick {
            vec![1, 100, 1000]
        } else {
            vec![1, 100, 1000, 10_000]
        };
        for n in conns {
            let mut args = vec![
                "echo".into(),
                "--conns".into(),
                n.to_string(),
                "--size".into(),
                "64".into(),
            ];
            args.extend(timing.iter().cloned());
            loads.push(Load {
                label: format!("{n} conns"),
                x: n,
                charted: true,
                args,
            });
        }
        let mut args: Vec<String> = ["echo", "--conns", "16", "--depth", "32", "--size", "4096"]
            .map(String::from)
            .to_vec();
        args.extend(timing.iter().cloned());
        loads.push(Load {
            label: "pipelined 16x32x4KiB".into(),
            x: 16,
            charted: false,
            args,
        });
    } else {
        let receivers = if !o.conns.is_empty() {
            o.conns.clone()
        } else if o.quick {
            vec![10, 100]
        } else {
            vec![10, 100, 1000]
        };
        // Saturation two ways. Ten senders with one line each in flight is
        // a chat room: every line arrives alone and costs the server one
        // write per receiver. One sender with 256 lines in flight lets the
        // server batch (one read holds many lines, one write per receiver
        // carries them all): the most it can move, not a chat's load.
        for n in receivers {
            for (senders, window, label, charted) in [
                (10, 1, format!("{n} rcv, 10 senders"), true),
                (1, 256, format!("{n} rcv, batched x256"), false),
            ] {
                let mut args: Vec<String> = vec![
                    "chat".into(),
                    "--receivers".into(),
                    n.to_string(),
                    "--senders".into(),
                    senders.to_string(),
                    "--window".into(),
                    window.to_string(),
                    "--rate".into(),
                    "0".into(),
                ];
                args.extend(timing.iter().cloned());
                loads.push(Load {
                    label,
                    x: n,
                    charted,
                    args,
                });
            }
        }
    }
    loads
}

/// Runs `rounds` rounds of every server under `loads` (numbered from
/// `first`), the server order rotating each round.
#[allow(clippy::too_many_arguments)]
fn run_cells(
    servers: &[ServerSpec],
    loadgen: &Path,
    loads: &[Load],
    first: usize,
    rounds: usize,
    pin: &Pin,
    window_ms: u64,
    s: &Style,
) -> Vec<Cell> {
    let total = rounds * servers.len() * loads.len();
    let mut cells = Vec::new();
    for round in 0..rounds {
        for k in 0..servers.len() {
            let server = &servers[(k + round) % servers.len()];
            for (j, load) in loads.iter().enumerate() {
                let args = load.args.clone();
                let deadline = Duration::from_millis(window_ms) + Duration::from_secs(45);
                let result = run_cell(server, loadgen, &args, pin, deadline);
                let line = match &result {
                    Ok(m) => format!("{:>12.0}  p99 {:>8.0} us", m.rate, m.p99_us),
                    Err(e) => s.red(&format!("failed: {}", first_line(e))),
                };
                println!(
                    "[{:>3}/{total}] round {} {:<9} {:<26} {line}",
                    cells.len() + 1,
                    round + 1,
                    server.name,
                    load.label
                );
                cells.push(Cell {
                    server: server.name.clone(),
                    load: first + j,
                    round,
                    result,
                });
            }
        }
    }
    cells
}

/// Where server and client run.
#[derive(Debug, Clone)]
struct Pin {
    server: Option<usize>,
    client: Option<usize>,
}

impl Pin {
    fn parse(text: &str) -> Result<Pin> {
        if text == "none" {
            return Ok(Pin {
                server: None,
                client: None,
            });
        }
        let cpus: Vec<usize> = text
            .split(',')
            .map(|c| {
                c.trim().parse().with_context(|| {
                    format!("--pin {text:?}: give a CPU number, two (server,client), or none")
                })
            })
            .collect::<Result<_>>()?;
        match cpus.as_slice() {
            [one] => Ok(Pin {
                server: Some(*one),
                client: Some(*one),
            }),
            [a, b] => Ok(Pin {
                server: Some(*a),
                client: Some(*b),
            }),
            _ => bail!("--pin {text:?}: give a CPU number, two (server,client), or none"),
        }
    }

    fn describe(&self) -> String {
        match (self.server, self.client) {
            (Some(a), Some(b)) if a == b => format!("server and client on CPU {a}"),
            (Some(a), Some(b)) => format!("server on CPU {a}, client on CPU {b}"),
            _ => "no (the kernel places them)".into(),
        }
    }
}

/// Limits for a child: the open-file limit raised for 10,000 connections
/// (as far as the hard limit allows) and the CPU affinity.
fn prepare(cmd: &mut Command, cpu: Option<usize>) {
    // SAFETY: only async-signal-safe calls (setrlimit, sched_setaffinity)
    // on plain data between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = lim.rlim_max.min(65_536);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Kills a child when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, through a channel, so reads can time out.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The last bytes of a child's stderr, collected in the background.
fn tail_of(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.len() > 64 * 1024 {
                all.drain(..all.len() - 16 * 1024);
            }
        }
        let text = String::from_utf8_lossy(&all).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    })
}

fn run_cell(
    server: &ServerSpec,
    loadgen: &Path,
    args: &[String],
    pin: &Pin,
    deadline: Duration,
) -> Result<Metrics, String> {
    let until = Instant::now() + deadline;
    let mut cmd = Command::new(&server.program);
    cmd.args(&server.args)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    prepare(&mut cmd, pin.server);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.program.display()))?;
    let server_lines = lines_of(&mut child);
    let server_err = tail_of(&mut child);
    let mut srv = Reaper(child);
    let pid = srv.0.id();
    // Whether the server is gone, and its last words. A server that just
    // crashed may still be exiting when the client notices, so this gives
    // it a second to be reaped.
    let died = |srv: &mut Reaper,
                server_err: std::thread::JoinHandle<String>,
                max_threads: u64|
     -> String {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            match srv.0.try_wait() {
                Ok(Some(status)) => {
                    let tail = server_err.join().unwrap_or_default();
                    return format!("the server exited ({status}); its stderr: {tail}");
                }
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                // Still up: say what it had become (the blocking server
                // at 10,000 connections: thousands of threads).
                _ => {
                    return format!(
                        "the server is still running; it peaked at {} threads and {:.1} MiB RSS",
                        max_threads,
                        status_field(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0
                    );
                }
            }
        }
    };
    let addr = match server_lines.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => line
            .strip_prefix("listening on ")
            .map(str::to_string)
            .ok_or_else(|| {
                format!("the server's first line was {line:?}, not \"listening on <addr>\"")
            })?,
        Err(_) => {
            return Err(format!(
                "no \"listening on\" line within 10 s; {}",
                died(&mut srv, server_err, 0)
            ));
        }
    };

    let mut cmd = Command::new(loadgen);
    cmd.args(args)
        .arg("--addr")
        .arg(&addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    prepare(&mut cmd, pin.client);
    let mut client = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", loadgen.display()))?;
    let client_lines = lines_of(&mut client);
    let _client = Reaper(client);

    let mut cpu_start = None;
    let mut at_end = None;
    // The thread count is sampled as the cell runs: a server that fails
    // under load (the blocking one at 10,000 connections) is reported with
    // the size it reached, not the size it shrank back to.
    let mut max_threads = 0;
    loop {
        max_threads = max_threads.max(status_field(pid, "Threads").unwrap_or(0));
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no result within {deadline:?}; {}",
                died(&mut srv, server_err, max_threads)
            ));
        }
        let line = match client_lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "loadgen ended without a result; {}",
                    died(&mut srv, server_err, max_threads)
                ));
            }
        };
        if line == "measuring" {
            cpu_start = cpu_ticks(pid);
        } else if line == "done" {
            at_end = Some((
                cpu_ticks(pid),
                status_field(pid, "VmHWM"),
                status_field(pid, "Threads"),
            ));
        } else if let Some(e) = line.strip_prefix("error ") {
            return Err(format!("{e}; {}", died(&mut srv, server_err, max_threads)));
        } else if let Some(json) = line.strip_prefix("result ") {
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|e| format!("loadgen's result: {e}"))?;
            let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
            let (cpu_end, rss, threads) =
                at_end.ok_or("loadgen gave a result without closing the window")?;
            let ops = if v.get("mode").and_then(|m| m.as_str()) == Some("chat") {
                f("deliveries")
            } else {
                f("requests")
            };
            let cpu_s = match (cpu_start, cpu_end) {
                (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / ticks_per_second(),
                _ => f64::NAN,
            };
            let rate = if v.get("mode").and_then(|m| m.as_str()) == Some("chat") {
                f("deliveries_per_s")
            } else {
                f("rps")
            };
            return Ok(Metrics {
                rate,
                mb_per_s: f("mb_per_s"),
                lines_per_s: f("lines_per_s"),
                p50_us: f("p50_us"),
                p99_us: f("p99_us"),
                cpu_us_per_op: if ops > 0.0 {
                    cpu_s * 1e6 / ops
                } else {
                    f64::NAN
                },
                peak_rss_kib: rss.unwrap_or(0),
                threads: threads.unwrap_or(0),
            });
        }
    }
}

/// utime + stime of a process, all threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is 3rd.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A number from `/proc/<pid>/status` (`VmHWM: 1234 kB` -> 1234).
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Builds the servers of `spec` and loadgen in release mode in the bench's
/// own tree; returns loadgen's path and the servers.
fn build(course: &Course, spec: &Suite, o: &Options) -> Result<(PathBuf, Vec<ServerSpec>)> {
    let root = &course.root;
    let scratch = root.join(".course/bench");
    let tree = scratch.join("tree");
    let target = scratch.join("target");
    let labs: Vec<_> = spec
        .servers
        .iter()
        .filter(|(_, lab, _)| !lab.is_empty())
        .map(|(_, lab, _)| course.find(lab))
        .collect::<Result<_>>()?;
    let swapped: Vec<PathBuf> = if o.solution {
        labs.iter()
            .map(|l| PathBuf::from(&l.rel).join("src"))
            .collect()
    } else {
        Vec::new()
    };
    fsutil::mirror(root, &tree, &|rel: &Path| {
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        matches!(first.as_deref(), Some("target" | ".course" | ".git"))
            || swapped.iter().any(|s| s == rel)
    })
    .context("cannot copy the course to .course/bench/tree")?;
    if o.solution {
        for lab in &labs {
            crate::verify::set_src(
                &tree,
                lab,
                &crate::verify::read_tree(&lab.dir.join("solution")),
            )?;
        }
    }
    let mut cmd =
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(&tree)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--quiet", "-p", "loadgen"]);
    for lab in &labs {
        cmd.args(["-p", lab.package()]);
    }
    println!(
        "building the servers and loadgen in release mode (the first time builds every dependency: minutes)"
    );
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!(
            "the release build failed (see cargo's errors above); does every server lab compile?"
        );
    }
    let bin = target.join("release");
    let loadgen = bin.join("loadgen");
    let servers = spec
        .servers
        .iter()
        .map(|(name, _, binary)| {
            if binary.is_empty() {
                ServerSpec {
                    name: name.to_string(),
                    program: loadgen.clone(),
                    args: vec!["serve-echo".into()],
                }
            } else {
                ServerSpec {
                    name: name.to_string(),
                    program: bin.join(binary),
                    args: Vec::new(),
                }
            }
        })
        .collect();
    Ok((loadgen, servers))
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median over rounds of `server` under load `load`.
fn med(cells: &[Cell], server: &str, load: usize, f: impl Fn(&Metrics) -> f64) -> Option<f64> {
    median(
        cells
            .iter()
            .filter(|c| c.server == server && c.load == load)
            .filter_map(|c| c.result.as_ref().ok())
            .map(f),
    )
}

/// Median over rounds of `server`'s rate divided by `base`'s in the same round.
fn ratio(cells: &[Cell], server: &str, base: &str, load: usize) -> Option<f64> {
    let rate = |name: &str, round: usize| {
        cells
            .iter()
            .find(|c| c.server == name && c.load == load && c.round == round)
            .and_then(|c| c.result.as_ref().ok())
            .map(|m| m.rate)
    };
    let rounds = cells.iter().map(|c| c.round).max().unwrap_or(0) + 1;
    median((0..rounds).filter_map(|r| Some(rate(server, r)? / rate(base, r)?)))
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    &line[..line.len().min(100)]
}

fn print_table(
    servers: &[ServerSpec],
    loads: &[Load],
    cells: &[Cell],
    baseline: &str,
    ceiling: bool,
    unit: &str,
    s: &Style,
) {
    println!();
    let vs_ceiling = if ceiling { "vs ceiling" } else { "" };
    // A ratio to itself says nothing: one server, no ratio column.
    let compare = servers.len() > 1;
    let vs_baseline = if compare {
        format!("vs {baseline}")
    } else {
        String::new()
    };
    println!(
        "{}",
        s.bold(&format!(
            "{:<9} {:<26} {:>13} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "server",
            "load",
            unit,
            vs_baseline,
            vs_ceiling,
            "p50 us",
            "p99 us",
            "CPU us/op",
            "RSS MiB",
            "threads"
        ))
    );
    for (j, load) in loads.iter().enumerate() {
        for server in servers {
            let name = server.name.as_str();
            let failures: Vec<&str> = cells
                .iter()
                .filter(|c| c.server == name && c.load == j)
                .filter_map(|c| c.result.as_ref().err().map(String::as_str))
                .collect();
            let Some(rate) = med(cells, name, j, |m| m.rate) else {
                let why = failures.first().map(|e| first_line(e)).unwrap_or("not run");
                println!(
                    "{:<9} {:<26} {}",
                    name,
                    load.label,
                    s.red(&format!("failed: {why}"))
                );
                continue;
            };
            let fmt = |v: Option<f64>, prec: usize| {
                v.map(|x| format!("{x:.prec$}"))
                    .unwrap_or_else(|| "-".into())
            };
            let rate_text = if load.args.iter().any(|a| a == "--depth") {
                format!(
                    "{:.0} MB/s",
                    med(cells, name, j, |m| m.mb_per_s).unwrap_or(0.0)
                )
            } else {
                format!("{rate:.0}")
            };
            let failed_note = if failures.is_empty() {
                String::new()
            } else {
                s.yellow(&format!(" ({} round(s) failed)", failures.len()))
            };
            println!(
                "{:<9} {:<26} {:>13} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}{failed_note}",
                name,
                load.label,
                rate_text,
                if compare {
                    fmt(ratio(cells, name, baseline, j), 2)
                } else {
                    String::new()
                },
                if ceiling {
                    fmt(ratio(cells, name, "ceiling", j), 2)
                } else {
                    String::new()
                },
                fmt(med(cells, name, j, |m| m.p50_us), 0),
                fmt(med(cells, name, j, |m| m.p99_us), 0),
                fmt(med(cells, name, j, |m| m.cpu_us_per_op), 2),
                fmt(med(cells, name, j, |m| m.peak_rss_kib as f64 / 1024.0), 1),
                fmt(med(cells, name, j, |m| m.threads as f64), 0),
            );
        }
    }
}

fn to_csv(cells: &[Cell], loads: &[Load]) -> String {
    let mut out = String::from(
        "server,load,x,round,ok,rate,mb_per_s,lines_per_s,p50_us,p99_us,cpu_us_per_op,peak_rss_kib,threads,error\n",
    );
    for c in cells {
        let load = &loads[c.load];
        match &c.result {
            Ok(m) => out.push_str(&format!(
                "{},{},{},{},true,{:.1},{:.3},{:.1},{},{},{:.3},{},{},\n",
                c.server,
                load.label,
                load.x,
                c.round + 1,
                m.rate,
                m.mb_per_s,
                m.lines_per_s,
                m.p50_us,
                m.p99_us,
                m.cpu_us_per_op,
                m.peak_rss_kib,
                m.threads
            )),
            Err(e) => out.push_str(&format!(
                "{},{},{},{},false,,,,,,,,,\"{}\"\n",
                c.server,
                load.label,
                load.x,
                c.round + 1,
                e.lines().next().unwrap_or("").replace('"', "'")
            )),
        }
    }
    out
}

fn chart_svg(
    suite: &str,
    servers: &[ServerSpec],
    loads: &[Load],
    cells: &[Cell],
    unit: &str,
) -> String {
    let series = |f: &dyn Fn(&Metrics) -> f64| -> Vec<chart::Series> {
        servers
            .iter()
            .map(|srv| chart::Series {
                name: srv.name.clone(),
                points: loads
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.charted)
                    .filter_map(|(j, l)| Some((l.x as f64, med(cells, &srv.name, j, f)?)))
                    .collect(),
            })
            .collect()
    };
    let x_label = if suite == "echo" {
        "connections"
    } else {
        "receivers"
    };
    let panels = vec![
        chart::Panel {
            title: format!("{unit} (median)"),
            x_label: x_label.into(),
            series: series(&|m| m.rate),
        },
        chart::Panel {
            title: "peak RSS, MiB".into(),
            x_label: x_label.into(),
            series: series(&|m| m.peak_rss_kib as f64 / 1024.0),
        },
    ];
    chart::svg(&format!("cargo course bench {suite}"), &panels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_nan() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0].into_iter()), Some(2.5));
        assert_eq!(median([f64::NAN].into_iter()), None);
    }

    #[test]
    fn ratio_is_per_round() {
        let cell = |server: &str, round, rate| Cell {
            server: server.into(),
            load: 0,
            round,
            result: Ok(Metrics {
                rate,
                ..Metrics::default()
            }),
        };
        // Round 2 is twice as fast for both: the ratio does not move.
        let cells = vec![
            cell("a", 0, 100.0),
            cell("b", 0, 50.0),
            cell("a", 1, 200.0),
            cell("b", 1, 100.0),
        ];
        assert_eq!(ratio(&cells, "b", "a", 0), Some(0.5));
    }

    #[test]
    fn pin_parses() {
        assert_eq!(Pin::parse("0").unwrap().client, Some(0));
        assert_eq!(Pin::parse("0,1").unwrap().client, Some(1));
        assert!(Pin::parse("none").unwrap().server.is_none());
        assert!(Pin::parse("x").is_err());
    }
}
