//! What a bench run shows: the table, the CSV of every cell, the chart,
//! and the statistics behind them (medians over rounds, ratios per round).

use super::suite::{Load, Measures, Suite};
use super::{Cell, Metrics, Subject};
use crate::chart;
use crate::style::Style;

pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
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
    ratio_of(cells, server, base, load, |m| m.rate)
}

/// Median over rounds of `server`'s `f` divided by `base`'s in the same round.
fn ratio_of(
    cells: &[Cell],
    server: &str,
    base: &str,
    load: usize,
    f: impl Fn(&Metrics) -> f64,
) -> Option<f64> {
    let value = |name: &str, round: usize| {
        cells
            .iter()
            .find(|c| c.server == name && c.load == load && c.round == round)
            .and_then(|c| c.result.as_ref().ok())
            .map(&f)
    };
    let rounds = cells.iter().map(|c| c.round).max().unwrap_or(0) + 1;
    median((0..rounds).filter_map(|r| Some(value(server, r)? / value(base, r)?)))
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

pub fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    &line[..line.len().min(100)]
}

/// The table on the terminal: per load and server, medians over rounds
/// and ratios to the baseline (and the ceiling, when it ran).
pub fn print(
    suite: &Suite,
    servers: &[Subject],
    loads: &[Load],
    cells: &[Cell],
    baseline: &str,
    s: &Style,
) {
    if let Measures::Clients { .. } = suite.measures {
        return print_clients(suite, servers, loads, cells, baseline, s);
    }
    let unit = suite.unit;
    let ceiling = servers.iter().any(|s| s.name == "ceiling");
    println!();
    let vs_ceiling = if ceiling { "vs ceiling" } else { "" };
    // A ratio to itself says nothing: one server, no ratio column.
    let compare = servers.len() > 1;
    let vs_baseline = if compare {
        format!("vs {baseline}")
    } else {
        String::new()
    };
    // Columns as wide as the longest server name and ratio heading.
    let nw = servers
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let bw = vs_baseline.len().max(8);
    println!(
        "{}",
        s.bold(&format!(
            "{:<nw$} {:<26} {:>13} {:>bw$} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
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
                    "{:<nw$} {:<26} {}",
                    name,
                    load.label,
                    s.red(&format!("failed: {why}"))
                );
                continue;
            };
            let rate_text = if load.bulk {
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
                "{:<nw$} {:<26} {:>13} {:>bw$} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}{failed_note}",
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

/// The http suite's table: load generators against the one fixed server,
/// each generator's requests/s and p50/p99 latency with its ratio to the
/// baseline's (wrk's) of the same round, then the generator's own cost.
fn print_clients(
    suite: &Suite,
    servers: &[Subject],
    loads: &[Load],
    cells: &[Cell],
    baseline: &str,
    s: &Style,
) {
    println!();
    let compare = servers.len() > 1;
    let vs = if compare {
        format!("vs {baseline}")
    } else {
        String::new()
    };
    let nw = servers
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let bw = vs.len().max(6);
    println!(
        "{}",
        s.bold(&format!(
            "{:<nw$} {:<12} {:>10} {:>bw$} {:>8} {:>bw$} {:>8} {:>bw$} {:>7} {:>10} {:>8} {:>7}",
            "generator",
            "load",
            suite.unit,
            vs,
            "p50 us",
            vs,
            "p99 us",
            vs,
            "errors",
            "CPU us/req",
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
                    "{:<nw$} {:<12} {}",
                    name,
                    load.label,
                    s.red(&format!("failed: {why}"))
                );
                continue;
            };
            let vs = |f: fn(&Metrics) -> f64| {
                if compare {
                    fmt(ratio_of(cells, name, baseline, j, f), 2)
                } else {
                    String::new()
                }
            };
            let failed_note = if failures.is_empty() {
                String::new()
            } else {
                s.yellow(&format!(" ({} round(s) failed)", failures.len()))
            };
            println!(
                "{:<nw$} {:<12} {:>10.0} {:>bw$} {:>8} {:>bw$} {:>8} {:>bw$} {:>7} {:>10} {:>8} {:>7}{failed_note}",
                name,
                load.label,
                rate,
                vs(|m| m.rate),
                fmt(med(cells, name, j, |m| m.p50_us), 0),
                vs(|m| m.p50_us),
                fmt(med(cells, name, j, |m| m.p99_us), 0),
                vs(|m| m.p99_us),
                fmt(med(cells, name, j, |m| m.errors as f64), 0),
                fmt(med(cells, name, j, |m| m.cpu_us_per_op), 2),
                fmt(med(cells, name, j, |m| m.peak_rss_kib as f64 / 1024.0), 1),
                fmt(med(cells, name, j, |m| m.threads as f64), 0),
            );
        }
    }
    println!(
        "{}",
        s.dim(&format!(
            "every generator loaded the same server (loadgen serve-http); CPU, RSS and threads are each generator's own; a latency ratio above 1 is a higher latency than {baseline} reports"
        ))
    );
    if baseline == "wrk" {
        println!(
            "{}",
            s.dim(
                "wrk back-fills its latency histogram after a stall (a coordinated-omission correction at its mean interval per connection): one stall of the machine becomes many slow samples in wrk's p99, one in a closed-loop count that does not correct"
            )
        );
    }
}

/// Every cell, one row each.
pub fn to_csv(cells: &[Cell], loads: &[Load]) -> String {
    let mut out = String::from(
        "server,load,x,round,ok,rate,mb_per_s,lines_per_s,p50_us,p99_us,cpu_us_per_op,peak_rss_kib,threads,errors,error\n",
    );
    for c in cells {
        let load = &loads[c.load];
        match &c.result {
            Ok(m) => out.push_str(&format!(
                "{},{},{},{},true,{:.1},{:.3},{:.1},{},{},{:.3},{},{},{},\n",
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
                m.threads,
                m.errors
            )),
            Err(e) => out.push_str(&format!(
                "{},{},{},{},false,,,,,,,,,,\"{}\"\n",
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

/// The chart: rate and peak RSS against the suite's x axis.
pub fn chart_svg(suite: &Suite, servers: &[Subject], loads: &[Load], cells: &[Cell]) -> String {
    let unit = suite.unit;
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
    let x_label = suite.x_label;
    let panels = vec![
        chart::Panel {
            title: format!("{unit} (median)"),
            x_label: x_label.into(),
            series: series(&|m| m.rate),
        },
        match suite.measures {
            Measures::Servers => chart::Panel {
                title: "peak RSS, MiB".into(),
                x_label: x_label.into(),
                series: series(&|m| m.peak_rss_kib as f64 / 1024.0),
            },
            // Generators against one server: the latency each reports.
            Measures::Clients { .. } => chart::Panel {
                title: "p99 latency, us (median)".into(),
                x_label: x_label.into(),
                series: series(&|m| m.p99_us),
            },
        },
    ];
    chart::svg(&format!("cargo course bench {}", suite.name), &panels)
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
}
