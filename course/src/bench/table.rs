//! What a bench run shows: the table, the CSV of every cell, the chart,
//! and the statistics behind them (medians over rounds, ratios per round).

use super::suite::{Load, Suite};
use super::{Cell, Metrics, ServerSpec};
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

pub fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    &line[..line.len().min(100)]
}

/// The table on the terminal: per load and server, medians over rounds
/// and ratios to the baseline (and the ceiling, when it ran).
pub fn print(
    suite: &Suite,
    servers: &[ServerSpec],
    loads: &[Load],
    cells: &[Cell],
    baseline: &str,
    s: &Style,
) {
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
            let fmt = |v: Option<f64>, prec: usize| {
                v.map(|x| format!("{x:.prec$}"))
                    .unwrap_or_else(|| "-".into())
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

/// Every cell, one row each.
pub fn to_csv(cells: &[Cell], loads: &[Load]) -> String {
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

/// The chart: rate and peak RSS against the suite's x axis.
pub fn chart_svg(suite: &Suite, servers: &[ServerSpec], loads: &[Load], cells: &[Cell]) -> String {
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
        chart::Panel {
            title: "peak RSS, MiB".into(),
            x_label: x_label.into(),
            series: series(&|m| m.peak_rss_kib as f64 / 1024.0),
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
