//! The bench suites: what each one measures, under which loads, and how
//! it reads `loadgen`'s result.
//!
//! A [`Suite`] owns everything particular to it: the loads it offers (and
//! `loadgen`'s arguments for them, written here and nowhere else), the unit
//! of its rate, its chart's x axis, its baseline, and loads that follow from
//! a first round of results (chat's latency at half the room's maximum).
//! Which labs it measures comes from `course.toml` (`bench = { suite, name,
//! binary }`), the one manifest.
//!
//! Most suites measure *servers* under the course's load generator. The
//! http suite turns this around ([`Measures::Clients`]): it measures *load
//! generators* (lab 36's `loadtest` and the real `wrk`) against one fixed,
//! fast server, so its `bench` entry names a client binary.

use anyhow::{Result, bail};

use super::{Cell, Options, median};

/// One load: what `loadgen` is told, and where it sits on the chart.
#[derive(Debug, Clone)]
pub struct Load {
    pub label: String,
    /// Connections or receivers: the chart's x axis.
    pub x: u64,
    /// On the chart (ping-pong and saturation loads), or only in the table.
    pub charted: bool,
    /// Shown as a rate (`unit`) or as MB/s (bulk, pipelined loads).
    pub bulk: bool,
    /// `loadgen`'s arguments, before `--addr` and the timing flags.
    pub args: Vec<String>,
}

/// What a suite's subjects (the rows of its table) are.
pub enum Measures {
    /// Servers, each started fresh for every cell, under `loadgen` running
    /// the load's arguments. A `bench` entry's binary is a server.
    Servers,
    /// Load generators, each run for every cell (as `loadgen http --tool
    /// ..`, with the load's arguments) against a fresh `loadgen` started
    /// with these arguments: the same server for every generator, never the
    /// thing compared. A `bench` entry's binary is a client.
    Clients { server: &'static [&'static str] },
}

/// A bench suite.
pub struct Suite {
    pub name: &'static str,
    /// Servers or load generators.
    pub measures: Measures,
    /// The subject every other is compared with, round by round.
    pub baseline: &'static str,
    /// What the rate is called in the table and on the chart.
    pub unit: &'static str,
    /// The chart's x axis.
    pub x_label: &'static str,
    /// Whether loadgen's own echo server runs as "ceiling".
    pub ceiling: bool,
    /// A subject outside the course that runs alongside the labs (its name
    /// and `loadgen`'s arguments to become it): the real `redis-server`,
    /// the real `wrk`.
    pub reference: Option<(&'static str, &'static [&'static str])>,
    /// Programs outside the course the suite runs, and the package that
    /// brings each: checked before anything is built.
    pub needs: &'static [(&'static str, &'static str)],
    /// The keys of loadgen's result: the rate, and the count it divides CPU by.
    pub rate_key: &'static str,
    pub ops_key: &'static str,
    /// The loads of every round.
    loads: fn(&Options) -> Vec<Load>,
    /// Loads that follow from the first results (run after them).
    follow_up: fn(&[Load], &[Cell]) -> Vec<Load>,
}

/// The suites, by name.
pub const SUITES: [&Suite; 4] = [&ECHO, &CHAT, &REDIS, &HTTP];

pub fn suite(name: &str) -> Result<&'static Suite> {
    match SUITES.iter().find(|s| s.name == name) {
        Some(s) => Ok(s),
        None => bail!(
            "no bench suite {name:?}: the suites are {}",
            SUITES.map(|s| s.name).join(", ")
        ),
    }
}

impl Suite {
    pub fn loads(&self, o: &Options) -> Vec<Load> {
        (self.loads)(o)
    }

    pub fn follow_up(&self, loads: &[Load], cells: &[Cell]) -> Vec<Load> {
        (self.follow_up)(loads, cells)
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

fn none(_: &[Load], _: &[Cell]) -> Vec<Load> {
    Vec::new()
}

/// Echo: ping-pong of 64-byte messages over 1 to 10,000 connections, and a
/// pipelined bulk load.
pub const ECHO: Suite = Suite {
    name: "echo",
    measures: Measures::Servers,
    baseline: "mio",
    unit: "req/s",
    x_label: "connections",
    ceiling: true,
    reference: None,
    needs: &[],
    rate_key: "rps",
    ops_key: "requests",
    loads: echo_loads,
    follow_up: none,
};

fn echo_loads(o: &Options) -> Vec<Load> {
    let conns = if !o.conns.is_empty() {
        o.conns.clone()
    } else if o.quick {
        vec![1, 100, 1000]
    } else {
        vec![1, 100, 1000, 10_000]
    };
    let mut loads: Vec<Load> = conns
        .into_iter()
        .map(|n| Load {
            label: format!("{n} conns"),
            x: n,
            charted: true,
            bulk: false,
            args: words(&["echo", "--conns", &n.to_string(), "--size", "64"]),
        })
        .collect();
    loads.push(Load {
        label: "pipelined 16x32x4KiB".into(),
        x: 16,
        charted: false,
        bulk: true,
        args: words(&["echo", "--conns", "16", "--depth", "32", "--size", "4096"]),
    });
    loads
}

/// Redis: the real `redis-benchmark` (GET and SET, 50 clients, without
/// and with pipelining) against the Redis-compatible labs and the real
/// `redis-server`, which is the baseline.
pub const REDIS: Suite = Suite {
    name: "redis",
    measures: Measures::Servers,
    baseline: "redis-server",
    unit: "req/s",
    x_label: "commands per round trip (-P)",
    ceiling: false,
    reference: Some(("redis-server", &["serve-redis"])),
    needs: &[
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-server"),
    ],
    rate_key: "rps",
    ops_key: "requests",
    loads: redis_loads,
    follow_up: none,
};

fn redis_loads(o: &Options) -> Vec<Load> {
    let mut loads = Vec::new();
    for test in ["get", "set"] {
        for pipeline in [1u64, 16] {
            // Long enough runs that connection setup does not count: about
            // a second at the rates this machine reaches.
            let requests: u64 = match (o.quick, pipeline) {
                (true, 1) => 50_000,
                (true, _) => 400_000,
                (false, 1) => 200_000,
                (false, _) => 2_000_000,
            };
            loads.push(Load {
                label: format!("{} -P {pipeline}", test.to_uppercase()),
                x: pipeline,
                // One line per server on the chart: GET; SET is in the table.
                charted: test == "get",
                bulk: false,
                args: words(&[
                    "redis",
                    "--test",
                    test,
                    "--clients",
                    "50",
                    "--pipeline",
                    &pipeline.to_string(),
                    "--requests",
                    &requests.to_string(),
                ]),
            });
        }
    }
    loads
}

/// Http: load generators compared, not servers. Lab 36's `loadtest` and
/// the real `wrk` (the baseline) each load `loadgen serve-http` (one
/// thread, keep-alive, a fixed 3-byte 200) at the same connection counts,
/// closed loop, for the same whole seconds; the table compares their
/// requests/s and their p50 and p99 latencies with wrk's.
pub const HTTP: Suite = Suite {
    name: "http",
    measures: Measures::Clients {
        server: &["serve-http"],
    },
    baseline: "wrk",
    unit: "req/s",
    x_label: "connections",
    ceiling: false,
    reference: Some(("wrk", &["http", "--tool", "wrk"])),
    needs: &[("wrk", "wrk")],
    rate_key: "rps",
    ops_key: "requests",
    loads: http_loads,
    follow_up: none,
};

fn http_loads(o: &Options) -> Vec<Load> {
    let conns = if !o.conns.is_empty() {
        o.conns.clone()
    } else if o.quick {
        vec![1, 10, 100]
    } else {
        vec![1, 10, 100, 1000]
    };
    conns
        .into_iter()
        .map(|n| Load {
            label: format!("{n} conns"),
            x: n,
            charted: true,
            bulk: false,
            args: words(&["--conns", &n.to_string()]),
        })
        .collect()
}

/// Chat: one line fanned out to 10 to 1,000 receivers, as a chat room (ten
/// senders, one line each in flight) and batched; then latency at half the
/// room's maximum.
pub const CHAT: Suite = Suite {
    name: "chat",
    measures: Measures::Servers,
    baseline: "chat",
    unit: "deliveries/s",
    x_label: "receivers",
    ceiling: false,
    reference: None,
    needs: &[],
    rate_key: "deliveries_per_s",
    ops_key: "deliveries",
    loads: chat_loads,
    follow_up: chat_latency_loads,
};

fn chat_args(receivers: u64, senders: u64, window: Option<u64>, rate: u64) -> Vec<String> {
    let mut args = words(&[
        "chat",
        "--receivers",
        &receivers.to_string(),
        "--senders",
        &senders.to_string(),
    ]);
    if let Some(w) = window {
        args.extend(words(&["--window", &w.to_string()]));
    }
    args.extend(words(&["--rate", &rate.to_string()]));
    args
}

fn chat_loads(o: &Options) -> Vec<Load> {
    let receivers = if !o.conns.is_empty() {
        o.conns.clone()
    } else if o.quick {
        vec![10, 100]
    } else {
        vec![10, 100, 1000]
    };
    // Saturation two ways. Ten senders with one line each in flight is a
    // chat room: every line arrives alone and costs the server one write
    // per receiver. One sender with 256 lines in flight lets the server
    // batch (one read holds many lines, one write per receiver carries them
    // all): the most it can move, not a chat's load.
    let mut loads = Vec::new();
    for n in receivers {
        loads.push(Load {
            label: format!("{n} rcv, 10 senders"),
            x: n,
            charted: true,
            bulk: false,
            args: chat_args(n, 10, Some(1), 0),
        });
        loads.push(Load {
            label: format!("{n} rcv, batched x256"),
            x: n,
            charted: false,
            bulk: false,
            args: chat_args(n, 1, Some(256), 0),
        });
    }
    loads
}

/// Latency at a load the server can carry: half the chat room's measured
/// maximum, offered at a steady rate by the same ten senders.
fn chat_latency_loads(loads: &[Load], cells: &[Cell]) -> Vec<Load> {
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
            extra.push(Load {
                label: format!("{} rcv @ {rate} lines/s", l.x),
                x: l.x,
                charted: false,
                bulk: false,
                args: chat_args(l.x, 10, None, rate),
            });
        }
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Course;

    fn options(conns: Vec<u64>) -> Options {
        Options {
            suite: String::new(),
            solution: false,
            quick: false,
            pin: "none".into(),
            rounds: None,
            conns,
            warmup_ms: None,
            duration_ms: None,
            loadgen: None,
            servers: Vec::new(),
        }
    }

    #[test]
    fn echo_loads_follow_the_connection_counts() {
        let loads = ECHO.loads(&options(vec![1, 4]));
        let labels: Vec<&str> = loads.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["1 conns", "4 conns", "pipelined 16x32x4KiB"]);
        assert_eq!(
            loads[1].args,
            words(&["echo", "--conns", "4", "--size", "64"])
        );
        assert!(loads[2].bulk && !loads[2].charted);
    }

    #[test]
    fn chat_offers_half_the_measured_maximum() {
        use super::super::Metrics;
        let loads = CHAT.loads(&options(vec![10]));
        let cell = |rate| Cell {
            server: "chat".into(),
            load: 0,
            round: 0,
            result: Ok(Metrics {
                lines_per_s: rate,
                ..Metrics::default()
            }),
        };
        let extra = CHAT.follow_up(&loads, &[cell(1000.0)]);
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].args, chat_args(10, 10, None, 500));
    }

    #[test]
    fn http_loads_are_connection_counts_for_a_generator() {
        let loads = HTTP.loads(&options(vec![1, 64]));
        let labels: Vec<&str> = loads.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["1 conns", "64 conns"]);
        // The mode comes from the subject (`http --tool ..`), not the load.
        assert_eq!(loads[1].args, words(&["--conns", "64"]));
        assert!(loads.iter().all(|l| l.charted && !l.bulk));
        let mut quick = options(Vec::new());
        quick.quick = true;
        assert_eq!(
            HTTP.loads(&quick).iter().map(|l| l.x).collect::<Vec<_>>(),
            [1, 10, 100]
        );
        let Measures::Clients { server } = HTTP.measures else {
            panic!("the http suite measures clients")
        };
        assert_eq!(server, ["serve-http"]);
        assert_eq!(HTTP.reference.map(|r| r.0), Some("wrk"));
        assert!(
            HTTP.needs
                .iter()
                .any(|(p, pkg)| *p == "wrk" && *pkg == "wrk")
        );
    }

    #[test]
    fn unknown_suites_are_named() {
        let e = suite("memcached").err().unwrap().to_string();
        assert!(e.contains("echo, chat, redis, http"), "{e}");
        assert!(suite("redis").is_ok());
        assert!(suite("http").is_ok());
    }

    /// Every `bench` entry in the real course.toml names a suite that
    /// exists, and every suite's baseline is one of its servers (from
    /// course.toml, or the suite's reference server outside the course).
    #[test]
    fn course_toml_bench_entries_match_the_suites() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let course = Course::load(root).unwrap();
        let entries: Vec<_> = course
            .labs()
            .into_iter()
            .filter_map(|l| l.entry.bench.clone())
            .collect();
        for e in &entries {
            assert!(suite(&e.suite).is_ok(), "{e:?} names no known suite");
        }
        // The http suite's entry is lab 36's client, run by `loadgen http
        // --tool loadtest`; every other suite's entries are servers.
        let http: Vec<_> = course
            .labs()
            .into_iter()
            .filter(|l| l.entry.bench.as_ref().is_some_and(|b| b.suite == "http"))
            .collect();
        assert_eq!(http.len(), 1, "one load generator in the http suite");
        assert_eq!(http[0].entry.id, "lab_36_load_tester");
        assert_eq!(http[0].entry.bench.as_ref().unwrap().binary, "loadtest");
        for s in SUITES {
            assert!(
                s.reference.is_some_and(|(name, _)| name == s.baseline)
                    || entries
                        .iter()
                        .any(|e| e.suite == s.name && e.name == s.baseline),
                "suite {} has no server named {} (its baseline) in course.toml",
                s.name,
                s.baseline
            );
        }
    }
}
