//! The http suite's clients: `loadgen http` runs one *load generator*
//! against the fixed server (`loadgen serve-http`) and reports what it
//! measured in loadgen's protocol, so the bench tool treats the generator
//! as the thing under test and the server as the constant.
//!
//! ```text
//! loadgen http --addr A --conns N --tool wrk|loadtest [--program P]
//!              [--warmup-ms 1000] [--duration-ms 3000]
//! ```
//!
//! - `--tool wrk` runs the real `wrk` (`-t T -c N -d D --latency`) and
//!   reads its text report.
//! - `--tool loadtest` runs lab 36's `loadtest` (`--program`, default
//!   `loadtest` on `PATH`) with the same `-c N -d D` and reads its JSON
//!   report (`--json FILE`: `requests`, `rps`, `errors.total`,
//!   `latency_us.p50`/`p99`).
//!
//! Both get the same threads (`T`: the CPUs this process may run on, as
//! pinned by the bench, at most one per connection; wrk is told, loadtest's
//! default is the same), the same connections
//! and the same whole-second duration (wrk takes no less than a second), so
//! the only thing that differs is the generator. A warm-up run of the same
//! generator, discarded, comes first. The generator's own CPU time per
//! request (`getrusage` of the child), its peak RSS and its thread count are
//! reported with the rate and latencies: a generator that needs more CPU
//! per request leaves less for the server on a shared core.
//!
//! wrk's latencies are not raw: before printing, wrk "corrects" its
//! histogram (`stats_correct`) by adding, for every sample above the mean
//! interval of one connection (`runtime / (requests / connections)`), the
//! samples a constant-rate client would have seen during that wait. One
//! stall of a few milliseconds (a busy machine) thus lifts wrk's p99 far
//! more than it lifts that of a closed-loop generator that records what it
//! measured; the table says so next to the ratios.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Opts, say};

/// What one generator run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors, timeouts and non-2xx/3xx answers.
    pub errors: u64,
}

/// The generator's cost, from the kernel.
struct Usage {
    cpu_s: f64,
    max_rss_kib: u64,
    max_threads: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Wrk,
    Loadtest,
}

pub fn run(o: &Opts) -> Result<String, String> {
    let addr = o.addr()?;
    let conns = o.num("conns", 10)?.max(1);
    let tool = match o.str("tool").unwrap_or("wrk") {
        "wrk" => Tool::Wrk,
        "loadtest" => Tool::Loadtest,
        other => return Err(format!("--tool {other:?}: wrk or loadtest")),
    };
    let program = PathBuf::from(o.str("program").unwrap_or(match tool {
        Tool::Wrk => "wrk",
        Tool::Loadtest => "loadtest",
    }));
    let secs = |ms: u64| ms.div_ceil(1000).max(1);
    let warmup = o.num("warmup-ms", 1000)?;
    let duration = secs(o.num("duration-ms", 3000)?);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get() as u64)
        .min(conns);

    wait_for_http(addr)?;
    let generator = Generator {
        tool,
        program,
        addr,
        conns,
        threads,
    };
    if warmup > 0 {
        generator.run(secs(warmup))?;
    }
    say(&format!("connected {conns}"));
    say("measuring");
    let started = Instant::now();
    let (report, usage) = generator.run(duration)?;
    let elapsed = started.elapsed();
    say("done");
    if report.requests == 0 {
        return Err(format!(
            "{} made no request in {duration} s",
            generator.program.display()
        ));
    }
    Ok(format!(
        "{{\"rps\":{:.1},\"requests\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"errors\":{},\
         \"cpu_us_per_req\":{:.3},\"peak_rss_kib\":{},\"threads\":{},\"gen_threads\":{threads},\
         \"elapsed_s\":{:.3}}}",
        report.rps,
        report.requests,
        report.p50_us,
        report.p99_us,
        report.errors,
        usage.cpu_s * 1e6 / report.requests as f64,
        usage.max_rss_kib,
        usage.max_threads,
        elapsed.as_secs_f64()
    ))
}

struct Generator {
    tool: Tool,
    program: PathBuf,
    addr: SocketAddr,
    conns: u64,
    threads: u64,
}

impl Generator {
    /// One run of `secs` seconds: the generator's report and its cost.
    fn run(&self, secs: u64) -> Result<(Report, Usage), String> {
        let url = format!("http://{}/", self.addr);
        let (t, c, d) = (
            self.threads.to_string(),
            self.conns.to_string(),
            format!("{secs}s"),
        );
        let mut cmd = Command::new(&self.program);
        let json = std::env::temp_dir().join(format!(
            "loadgen-loadtest-{}-{}.json",
            std::process::id(),
            self.conns
        ));
        match self.tool {
            Tool::Wrk => {
                cmd.args(["-t", &t, "-c", &c, "-d", &d, "--latency"]).args([
                    "--timeout",
                    "5s",
                    &url,
                ]);
            }
            Tool::Loadtest => {
                let _ = std::fs::remove_file(&json);
                // Only the options of the lab's README: its own default
                // threads are one per core it may use, as `T` is.
                cmd.args([url.as_str(), "-c", &c, "-d", &d, "--json"])
                    .arg(&json);
            }
        }
        let (stdout, stderr, usage) = run_measured(&mut cmd, secs).map_err(|e| {
            let name = self.program.display();
            match (self.tool, e.kind()) {
                (Tool::Wrk, std::io::ErrorKind::NotFound) => {
                    "cannot run wrk: install the wrk package (sudo apt-get install wrk)".to_string()
                }
                _ => format!("cannot run {name}: {e}"),
            }
        })?;
        let report = match self.tool {
            Tool::Wrk => parse_wrk(&stdout).ok_or_else(|| {
                format!(
                    "cannot read wrk's report: {:?} (stderr: {:?})",
                    stdout.trim(),
                    stderr.trim()
                )
            }),
            Tool::Loadtest => {
                let text = std::fs::read_to_string(&json).map_err(|e| {
                    format!(
                        "{} wrote no JSON report to {} ({e}); its stderr: {:?}",
                        self.program.display(),
                        json.display(),
                        stderr.trim()
                    )
                })?;
                let _ = std::fs::remove_file(&json);
                parse_loadtest(&text)
            }
        }?;
        Ok((report, usage))
    }
}

/// Runs `cmd` to the end (or kills it `secs + 30` s in), sampling its
/// thread count as it goes; returns its stdout, stderr and what it cost.
fn run_measured(cmd: &mut Command, secs: u64) -> std::io::Result<(String, String, Usage)> {
    let before = children_usage();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("piped")));
    let err = pipe(Box::new(child.stderr.take().expect("piped")));
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(secs + 30);
    let mut max_threads = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        max_threads = max_threads.max(threads_of(pid));
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "it did not finish a {secs} s run within {} s",
                secs + 30
            )));
        }
        // A sampling interval for the thread count, bounded by `until`.
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = children_usage();
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "it exited with {status}; stderr: {}",
            stderr.trim()
        )));
    }
    Ok((
        stdout,
        stderr,
        Usage {
            cpu_s: after.0 - before.0,
            max_rss_kib: after.1,
            max_threads,
        },
    ))
}

/// CPU seconds (user + system) of every child waited for so far, and the
/// largest peak RSS among them (KiB).
fn children_usage() -> (f64, u64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return (f64::NAN, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss as u64)
}

fn threads_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits up to 10 s for the server to answer one GET with a 200.
fn wait_for_http(addr: SocketAddr) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .and_then(|mut s| {
                use std::io::Write;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut reply = Vec::new();
                s.read_to_end(&mut reply)?;
                Ok(reply.starts_with(b"HTTP/1.1 200"))
            })
            .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!(
                "{addr} did not answer GET / with a 200 within 10 s"
            ));
        }
        // A retry interval: there is no event for "the server is up".
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A latency as wrk prints it (`98.00us`, `1.23ms`, `2.00s`, `1.50m`), in
/// microseconds.
fn wrk_time_us(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.trim().parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * scale)
}

/// wrk's text report (with `--latency`):
///
/// ```text
///   Latency Distribution
///      50%   98.00us
///      99%  269.00us
///   179396 requests in 2.00s, 14.20MB read
///   Socket errors: connect 0, read 0, write 0, timeout 0
///   Non-2xx or 3xx responses: 12
/// Requests/sec:  89682.18
/// ```
///
/// Requests, requests/s and the two percentiles are required; the error
/// lines appear only when there were errors.
pub fn parse_wrk(text: &str) -> Option<Report> {
    let mut requests = None;
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((pct, value)) = line.split_once('%') {
                match pct.trim() {
                    "50" => p50 = wrk_time_us(value),
                    "99" => p99 = wrk_time_us(value),
                    _ => {}
                }
                continue;
            }
            in_distribution = false;
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some((n, rest)) = line.split_once(" requests in ") {
            if rest.contains("read") {
                requests = n.trim().parse::<u64>().ok();
            }
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Some(Report {
        requests: requests?,
        rps: rps?,
        p50_us: p50?,
        p99_us: p99?,
        errors,
    })
}

/// lab 36's JSON report: `requests`, `rps`, `errors.total`, the non-2xx/3xx
/// counts of `status`, and `latency_us.p50`/`p99` in microseconds.
pub fn parse_loadtest(text: &str) -> Result<Report, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("loadtest's JSON report: {e}: {text:?}"))?;
    let num = |path: &[&str]| -> Result<f64, String> {
        let mut at = &v;
        for k in path {
            at = at.get(k).ok_or_else(|| {
                format!("loadtest's JSON report has no {}: {text}", path.join("."))
            })?;
        }
        at.as_f64()
            .ok_or_else(|| format!("loadtest's {} is not a number: {at}", path.join(".")))
    };
    let bad_status: u64 = v
        .get("status")
        .and_then(|s| s.as_object())
        .map(|m| {
            m.iter()
                .filter(|(code, _)| !(code.starts_with('2') || code.starts_with('3')))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(Report {
        requests: num(&["requests"])? as u64,
        rps: num(&["rps"])?,
        p50_us: num(&["latency_us", "p50"])?,
        p99_us: num(&["latency_us", "p99"])?,
        errors: num(&["errors", "total"])? as u64 + bad_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://127.0.0.1:40000/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   106.29us   40.15us   2.07ms   91.54%
    Req/Sec    90.13k     5.12k   98.45k    70.00%
  Latency Distribution
     50%   98.00us
     75%  110.00us
     90%  130.00us
     99%    1.27ms
  179396 requests in 2.00s, 14.20MB read
Requests/sec:  89682.18
Transfer/sec:      7.10MB
";

    #[test]
    fn wrk_report_is_read_with_its_units() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(
            r,
            Report {
                requests: 179_396,
                rps: 89_682.18,
                p50_us: 98.0,
                p99_us: 1270.0,
                errors: 0,
            }
        );
    }

    #[test]
    fn wrk_errors_and_slow_percentiles_are_counted() {
        let text = WRK
            .replace("99%    1.27ms", "99%    2.50s")
            .replace("50%   98.00us", "50%    1.50m")
            .replace(
                "Requests/sec:",
                "  Socket errors: connect 1, read 2, write 0, timeout 4\n  Non-2xx or 3xx responses: 5\nRequests/sec:",
            );
        let r = parse_wrk(&text).unwrap();
        assert_eq!(r.p50_us, 90e6);
        assert_eq!(r.p99_us, 2.5e6);
        assert_eq!(r.errors, 12);
    }

    #[test]
    fn an_incomplete_wrk_report_is_none() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_none());
        let no_latency: String = WRK
            .lines()
            .filter(|l| !l.contains('%') || l.contains("Stdev"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_wrk(&no_latency).is_none(), "--latency is required");
        assert_eq!(wrk_time_us("12.5ms"), Some(12_500.0));
        assert_eq!(wrk_time_us("12.5 parsecs"), None);
    }

    #[test]
    fn loadtest_report_is_read_from_its_json() {
        let json = r#"{"url":"http://127.0.0.1:1/","model":"closed","connections":10,
            "duration_s":1.0,"requests":5000,"rps":4999.5,"status":{"200":4990,"503":10},
            "errors":{"connect":0,"reset":1,"timeout":0,"protocol":0,"total":1},
            "latency_us":{"min":10,"p50":180,"p90":300,"p99":950,"p99.9":2000,"max":4000,"mean":190.5}}"#;
        let r = parse_loadtest(json).unwrap();
        assert_eq!(
            r,
            Report {
                requests: 5000,
                rps: 4999.5,
                p50_us: 180.0,
                p99_us: 950.0,
                errors: 11,
            }
        );
        let e = parse_loadtest(r#"{"requests":1,"rps":1}"#).unwrap_err();
        assert!(
            e.contains("errors.total") || e.contains("latency_us"),
            "{e}"
        );
    }
}
