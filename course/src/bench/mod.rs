//! `cargo course bench echo|chat|redis|http`: the servers of the
//! performance core under load, measured from a separate process; and, in
//! the http suite, the other way round: load generators measured against one
//! fixed server.
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
//! # The http suite: clients under test
//!
//! The http suite ([`suite::Measures::Clients`]) compares *load generators*:
//! lab 36's `loadtest` (its `bench` entry names a client binary) and the
//! real `wrk`, the baseline. Every cell starts the same fixed server,
//! `loadgen serve-http`, pinned where the other suites pin their servers,
//! and runs the generator under test through `loadgen http --tool ..`,
//! pinned where they pin `loadgen`. The CPU, memory and thread columns are
//! then the *generator's*, and the ratios compare each generator's requests/s
//! and p50/p99 latency with wrk's of the same round.
//!
//! By default server and client are pinned to the same CPU (`--pin 0`). On
//! a small VM, waking a thread on another vCPU costs tens of microseconds,
//! which would dominate a 64-byte round trip and measure the hypervisor,
//! not the server. `--pin none` leaves placement to the kernel; `--pin 0,1`
//! puts the server on CPU 0 and the client on CPU 1.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cargo::Cargo;
use crate::fsutil;
use crate::manifest::{BenchEntry, Course, Lab};
use crate::style::Style;

mod suite;
mod table;

use suite::{Load, Measures, Suite};
use table::median;

/// What to run: the arguments of `cargo course bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// echo, chat, redis or http.
    pub suite: String,
    /// Measure the reference solutions instead of your src/.
    #[arg(long)]
    pub solution: bool,
    /// A short run: one round, shorter windows, fewer connection counts.
    #[arg(long)]
    pub quick: bool,
    /// CPU for server and client ("0"), one each ("0,1"), or "none".
    #[arg(long, default_value = "0")]
    pub pin: String,
    /// Rounds (default 3, quick 1); servers rotate order each round.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Connection (echo, http) or receiver (chat) counts, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub conns: Vec<u64>,
    /// Warm-up before each measured window, in milliseconds.
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// Length of each measured window, in milliseconds.
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Use this load generator instead of building one (for tests).
    #[arg(long, hide = true)]
    pub loadgen: Option<PathBuf>,
    /// Measure this server (in the http suite: this load generator, as
    /// `name=loadgen http --tool loadtest --program P`), `name=program
    /// args`, for tests; with --loadgen, skips the build.
    #[arg(long = "server", hide = true)]
    pub servers: Vec<String>,
}

/// What a suite measures, one row of its table: a server (the command
/// before its address), or in the http suite a load generator (the command
/// before the load's arguments and `--addr`).
#[derive(Debug, Clone)]
pub struct Subject {
    name: String,
    program: PathBuf,
    args: Vec<String>,
}

/// What one cell measured.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Requests (echo) or deliveries (chat) per second.
    rate: f64,
    mb_per_s: f64,
    /// Fan-out lines per second (chat).
    lines_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU, memory and threads of the subject: the server, or in the
    /// http suite the load generator.
    cpu_us_per_op: f64,
    peak_rss_kib: u64,
    threads: u64,
    /// Failed requests the client saw (http: socket errors, non-2xx).
    errors: u64,
}

#[derive(Debug, Clone)]
pub struct Cell {
    server: String,
    load: usize,
    round: usize,
    result: Result<Metrics, String>,
}

/// What every cell of one run shares.
struct Run<'a> {
    suite: &'static Suite,
    /// The rows: servers, or in the http suite load generators.
    servers: Vec<Subject>,
    loadgen: PathBuf,
    /// The http suite's one server, the same for every generator.
    fixed_server: Option<Subject>,
    rounds: usize,
    pin: Pin,
    /// `--warmup-ms N --duration-ms N`, appended to every load's arguments.
    timing: Vec<String>,
    window_ms: u64,
    style: &'a Style,
}

pub fn bench(course: &Course, o: &Options, s: &Style) -> Result<bool> {
    let spec = suite::suite(&o.suite)?;
    let out_dir = course.root.join(".course/bench");
    if o.loadgen.is_none() {
        for (program, package) in spec.needs {
            if crate::doctor::which(program).is_none() {
                bail!(
                    "`cargo course bench {}` runs {program}, which is not installed: install the {package} package (sudo apt-get install {package})",
                    spec.name
                );
            }
        }
    }
    let (loadgen, mut servers) = match &o.loadgen {
        Some(l) => (l.clone(), Vec::new()),
        None => build(course, spec, o)?,
    };
    for raw in &o.servers {
        let (name, cmd) = raw
            .split_once('=')
            .context("--server takes name=program [args]")?;
        let mut words = cmd.split_whitespace().map(str::to_string);
        let program = PathBuf::from(words.next().context("--server needs a program")?);
        servers.push(Subject {
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

    let warmup = o.warmup_ms.unwrap_or(if o.quick { 300 } else { 1000 });
    let duration = o.duration_ms.unwrap_or(if o.quick { 1000 } else { 3000 });
    let fixed_server = match spec.measures {
        Measures::Servers => None,
        Measures::Clients { server } => Some(Subject {
            name: "loadgen".into(),
            program: loadgen.clone(),
            args: server.iter().map(|a| a.to_string()).collect(),
        }),
    };
    let run = Run {
        suite: spec,
        servers,
        fixed_server,
        loadgen,
        rounds: o.rounds.unwrap_or(if o.quick { 1 } else { 3 }).max(1),
        pin: Pin::parse(&o.pin)?,
        timing: vec![
            "--warmup-ms".to_string(),
            warmup.to_string(),
            "--duration-ms".to_string(),
            duration.to_string(),
        ],
        window_ms: warmup + duration,
        style: s,
    };
    let started = Instant::now();
    println!(
        "{} {} on {}, {} round(s), {warmup} ms warm-up + {duration} ms per cell, pinned: {}",
        s.bold("bench"),
        spec.name,
        if o.solution {
            "the reference solutions"
        } else {
            "your src/"
        },
        run.rounds,
        run.pin.describe()
    );

    let mut loads = spec.loads(o);
    let mut cells = run.cells(&loads, 0);
    let extra = spec.follow_up(&loads, &cells);
    let first = loads.len();
    loads.extend(extra);
    cells.extend(run.cells(&loads[first..], first));

    fs::create_dir_all(&out_dir)?;
    let tag = format!(
        "{}-{}",
        spec.name,
        if o.solution { "solution" } else { "src" }
    );
    let csv = out_dir.join(format!("{tag}.csv"));
    fs::write(&csv, table::to_csv(&cells, &loads))?;
    let svg = out_dir.join(format!("{tag}.svg"));
    fs::write(&svg, table::chart_svg(spec, &run.servers, &loads, &cells))?;

    table::print(spec, &run.servers, &loads, &cells, &baseline, s);
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

impl Run<'_> {
    /// Runs every round of every subject under `loads` (numbered from
    /// `first`), the subject order rotating each round.
    fn cells(&self, loads: &[Load], first: usize) -> Vec<Cell> {
        let servers = &self.servers;
        let n = servers.len();
        let total = self.rounds * n * loads.len();
        // Servers: one server through every load, then the next. Load
        // generators: every generator at one connection count, then the
        // next count, so the cells a ratio compares are seconds apart and a
        // busy spell of the machine hits both.
        let order: Vec<(usize, usize)> = match self.fixed_server {
            None => (0..n)
                .flat_map(|k| (0..loads.len()).map(move |j| (k, j)))
                .collect(),
            Some(_) => (0..loads.len())
                .flat_map(|j| (0..n).map(move |k| (k, j)))
                .collect(),
        };
        let loadgen = Subject {
            name: "loadgen".into(),
            program: self.loadgen.clone(),
            args: Vec::new(),
        };
        let mut cells = Vec::new();
        for round in 0..self.rounds {
            for &(k, j) in &order {
                let subject = &servers[(k + round) % n];
                let load = &loads[j];
                // Servers run under loadgen; in the http suite, the
                // subject is the client and the server is fixed.
                let (server, client) = match &self.fixed_server {
                    None => (subject, &loadgen),
                    Some(fixed) => (fixed, subject),
                };
                let mut args = client.args.clone();
                args.extend(load.args.iter().cloned());
                args.extend(self.timing.iter().cloned());
                let deadline = Duration::from_millis(self.window_ms) + Duration::from_secs(45);
                let result = run_cell(
                    self.suite,
                    server,
                    &client.program,
                    &args,
                    &self.pin,
                    deadline,
                );
                let line = match &result {
                    Ok(m) => format!("{:>12.0}  p99 {:>8.0} us", m.rate, m.p99_us),
                    Err(e) => self.style.red(&format!("failed: {}", table::first_line(e))),
                };
                println!(
                    "[{:>3}/{total}] round {} {:<9} {:<26} {line}",
                    cells.len() + 1,
                    round + 1,
                    subject.name,
                    load.label
                );
                cells.push(Cell {
                    server: subject.name.clone(),
                    load: first + j,
                    round,
                    result,
                });
            }
        }
        cells
    }
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

/// One cell: a fresh `server`, then `client` (loadgen, or in the http
/// suite `loadgen http` wrapping a generator) with `args` and `--addr`.
fn run_cell(
    suite: &Suite,
    server: &Subject,
    client: &Path,
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

    let mut cmd = Command::new(client);
    cmd.args(args)
        .arg("--addr")
        .arg(&addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    prepare(&mut cmd, pin.client);
    let mut client = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", client.display()))?;
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
            // A load generator under test that fails is its own failure
            // while the fixed server is still up: no word about the server.
            if let Measures::Clients { .. } = suite.measures
                && matches!(srv.0.try_wait(), Ok(None))
            {
                return Err(format!("the load generator failed: {e}"));
            }
            return Err(format!("{e}; {}", died(&mut srv, server_err, max_threads)));
        } else if let Some(json) = line.strip_prefix("result ") {
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|e| format!("loadgen's result: {e}"))?;
            let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
            let (cpu_end, rss, threads) =
                at_end.ok_or("loadgen gave a result without closing the window")?;
            let ops = f(suite.ops_key);
            let cpu_s = match (cpu_start, cpu_end) {
                (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / ticks_per_second(),
                _ => f64::NAN,
            };
            let rate = f(suite.rate_key);
            let mut metrics = Metrics {
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
                errors: f("errors") as u64,
            };
            if let Measures::Clients { .. } = suite.measures {
                // The subject is the generator: its own cost, as
                // `loadgen http` measured it, not the fixed server's.
                metrics.cpu_us_per_op = v
                    .get("cpu_us_per_req")
                    .and_then(|x| x.as_f64())
                    .unwrap_or(f64::NAN);
                metrics.peak_rss_kib = f("peak_rss_kib") as u64;
                metrics.threads = f("threads") as u64;
            }
            return Ok(metrics);
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

/// Builds the subjects of `spec` (servers, or the http suite's load
/// generators) and loadgen in release mode in the bench's own tree;
/// returns loadgen's path and the subjects.
fn build(course: &Course, spec: &Suite, o: &Options) -> Result<(PathBuf, Vec<Subject>)> {
    let root = &course.root;
    let scratch = root.join(".course/bench");
    let tree = scratch.join("tree");
    let target = scratch.join("target");
    // The suite's servers (or clients), in course order, from course.toml.
    let labs: Vec<(Lab, BenchEntry)> = course
        .ready_labs()
        .into_iter()
        .filter_map(|l| {
            let b = l.entry.bench.clone()?;
            (b.suite == spec.name).then_some((l, b))
        })
        .collect();
    let swapped: Vec<PathBuf> = if o.solution {
        labs.iter()
            .map(|(l, _)| PathBuf::from(&l.rel).join("src"))
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
        for (lab, _) in &labs {
            crate::verify::set_src(
                &tree,
                lab,
                &crate::verify::read_tree(&lab.dir.join("solution")),
            )?;
        }
    }
    let mut packages = vec!["loadgen".to_string()];
    packages.extend(labs.iter().map(|(l, _)| l.package().to_string()));
    println!(
        "building the {} and loadgen in release mode (the first time builds every dependency: minutes)",
        match spec.measures {
            Measures::Servers => "servers",
            Measures::Clients { .. } => "load generators",
        }
    );
    let cargo = Cargo {
        root: tree,
        target_dir: Some(target.clone()),
        progress: false,
    };
    cargo.build_release(&packages)?;
    let bin = target.join("release");
    let loadgen = bin.join("loadgen");
    let mut servers = Vec::new();
    if spec.ceiling {
        servers.push(Subject {
            name: "ceiling".into(),
            program: loadgen.clone(),
            args: vec!["serve-echo".into()],
        });
    }
    if let Some((name, args)) = spec.reference {
        servers.push(Subject {
            name: name.into(),
            program: loadgen.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
        });
    }
    servers.extend(labs.iter().map(|(_, b)| match spec.measures {
        Measures::Servers => Subject {
            name: b.name.clone(),
            program: bin.join(&b.binary),
            args: Vec::new(),
        },
        // The lab's binary is a load generator, run by `loadgen http`.
        Measures::Clients { .. } => Subject {
            name: b.name.clone(),
            program: loadgen.clone(),
            args: vec![
                "http".into(),
                "--tool".into(),
                "loadtest".into(),
                "--program".into(),
                bin.join(&b.binary).display().to_string(),
            ],
        },
    }));
    Ok((loadgen, servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_parses() {
        assert_eq!(Pin::parse("0").unwrap().client, Some(0));
        assert_eq!(Pin::parse("0,1").unwrap().client, Some(1));
        assert!(Pin::parse("none").unwrap().server.is_none());
        assert!(Pin::parse("x").is_err());
    }
}
