//! The report: a JSON document (the schema is in the README) and a short
//! human summary.

use std::time::Duration;

use serde_json::{Value, json};

use crate::load::Stats;

/// Everything the report says about one run.
pub struct Run<'a> {
    pub url: &'a str,
    pub connections: usize,
    pub rate: Option<f64>,
    pub elapsed: Duration,
    pub stats: &'a Stats,
}

impl Run<'_> {
    /// The percentiles, in microseconds, as `(name, value)`. An empty
    /// histogram reports zeros.
    fn latencies(&self) -> Vec<(&'static str, u64)> {
        let h = &self.stats.latency;
        if h.is_empty() {
            return ["min", "p50", "p90", "p99", "p99.9", "max"]
                .into_iter()
                .map(|k| (k, 0))
                .collect();
        }
        vec![
            ("min", h.min()),
            ("p50", h.value_at_quantile(0.50)),
            ("p90", h.value_at_quantile(0.90)),
            ("p99", h.value_at_quantile(0.99)),
            ("p99.9", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.requests() as f64 / secs
        } else {
            0.0
        }
    }

    pub fn json(&self) -> Value {
        let s = self.stats;
        let mut latency = serde_json::Map::new();
        for (k, v) in self.latencies() {
            latency.insert(k.into(), v.into());
        }
        let mean = if s.latency.is_empty() {
            0.0
        } else {
            s.latency.mean()
        };
        latency.insert("mean".into(), json!(mean));
        let status: serde_json::Map<String, Value> = s
            .status
            .iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        json!({
            "url": self.url,
            "model": if self.rate.is_some() { "open" } else { "closed" },
            "target_rate": self.rate,
            "connections": self.connections,
            "duration_s": self.elapsed.as_secs_f64(),
            "requests": s.requests(),
            "rps": self.rps(),
            "status": status,
            "errors": {
                "connect": s.errors.connect,
                "reset": s.errors.reset,
                "timeout": s.errors.timeout,
                "protocol": s.errors.protocol,
                "total": s.errors.total(),
            },
            "latency_us": latency,
        })
    }

    pub fn text(&self) -> String {
        let s = self.stats;
        let model = match self.rate {
            Some(r) => format!("open model at {r} requests/s"),
            None => "closed model".to_string(),
        };
        let status: Vec<String> = s.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let e = s.errors;
        let lat: Vec<String> = self
            .latencies()
            .into_iter()
            .map(|(k, us)| format!("{k} {}", ms(us)))
            .collect();
        format!(
            "{url}: {c} connections, {model}, {secs:.2} s\n\
             \x20 requests  {n} ({rps:.1}/s)\n\
             \x20 status    {status}\n\
             \x20 errors    {total} (connect {connect}, reset {reset}, timeout {timeout}, protocol {protocol})\n\
             \x20 latency   {lat}\n",
            url = self.url,
            c = self.connections,
            secs = self.elapsed.as_secs_f64(),
            n = s.requests(),
            rps = self.rps(),
            status = if status.is_empty() {
                "-".to_string()
            } else {
                status.join("  ")
            },
            total = e.total(),
            connect = e.connect,
            reset = e.reset,
            timeout = e.timeout,
            protocol = e.protocol,
            lat = lat.join("  "),
        )
    }
}

/// Microseconds as milliseconds with two decimals.
fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}
