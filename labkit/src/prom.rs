//! A strict parser of the Prometheus text exposition format (version 0.0.4),
//! for graders of services that export metrics (the capstone, lab 35).
//!
//! [`Scrape::parse`] reads what a `/metrics` endpoint answered: `# HELP` and
//! `# TYPE` lines, samples with label sets (label values with the escapes
//! `\"`, `\\` and `\n`), values including `+Inf`, `-Inf` and `NaN`, and an
//! optional timestamp. It groups samples into [`Family`]s the way Prometheus
//! does: a histogram `x` owns `x_bucket`, `x_sum` and `x_count`, a summary
//! owns `x`, `x_sum` and `x_count`.
//!
//! Lookups take label sets as `&[(&str, &str)]`:
//! - [`Scrape::get`]: the one sample with exactly these labels;
//! - [`Scrape::sum`]: the sum over every sample whose labels include these;
//! - [`Scrape::label_values`]: the distinct values one label takes;
//! - [`Scrape::histogram`]: one histogram series (buckets, `_sum`, `_count`).
//!
//! [`Scrape::check`] lists what a correct exporter never produces: a sample
//! whose family has no `# TYPE`, a `# TYPE` after its family's samples, the
//! same series twice, a negative or NaN counter, histogram buckets that are
//! not cumulative (a count that falls as `le` grows), a series without a
//! `+Inf` bucket, or one whose `+Inf` bucket differs from its `_count`.
//! [`Scrape::missing_help`] names the families without `# HELP`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A family's declared type (`# TYPE name <kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`x_bucket` for a histogram bucket).
    pub name: String,
    /// The labels in the order they were written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: Option<i64>,
    /// 1-based line number in the scraped text, for messages.
    pub line: usize,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the sample carries every pair of `want` (and maybe more).
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }

    /// Whether the sample's labels are exactly `want` (in any order).
    pub fn has_exactly(&self, want: &[(&str, &str)]) -> bool {
        self.labels.len() == want.len() && self.has_labels(want)
    }

    /// The label set without `le`/`quantile`: which series a bucket belongs to.
    fn series_key(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .labels
            .iter()
            .filter(|(k, _)| k != "le" && k != "quantile")
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.labels.is_empty() {
            let parts: Vec<_> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            write!(f, "{{{}}}", parts.join(","))?;
        }
        write!(f, " {}", self.value)
    }
}

/// A metric family: its name, `# HELP`, `# TYPE` and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    pub kind: Option<Kind>,
    pub samples: Vec<Sample>,
    /// Line of the `# TYPE`, if any.
    type_line: Option<usize>,
}

/// One histogram series: cumulative buckets in the order written, `_sum`, `_count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, as exported (`le` = `f64::INFINITY` for `+Inf`).
    pub buckets: Vec<(f64, f64)>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
}

/// A syntax error, with the line it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub text: String,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} (the line: {:?})",
            self.line, self.message, self.text
        )
    }
}

impl std::error::Error for ParseError {}

/// A parsed exposition; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Families in the order they first appeared.
    pub families: Vec<Family>,
    /// Problems found while grouping (a TYPE after samples, two TYPE lines).
    order_problems: Vec<String>,
}

impl Scrape {
    /// Parses an exposition; fails at the first line that is not valid
    /// text format 0.0.4.
    pub fn parse(text: &str) -> Result<Scrape, ParseError> {
        let mut s = Scrape::default();
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let err = |message: &str| ParseError {
                line,
                text: raw.to_string(),
                message: message.to_string(),
            };
            let l = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = l.trim_matches(|c| c == ' ' || c == '\t');
            if trimmed.is_empty() {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('#') {
                let rest = rest.trim_start_matches([' ', '\t']);
                let (word, rest) = split_token(rest);
                match word {
                    "HELP" => {
                        let (name, help) = split_token(rest);
                        if !is_metric_name(name) {
                            return Err(err("`# HELP` needs a valid metric name"));
                        }
                        let help = unescape(help, false).map_err(|m| err(&m))?;
                        let fam = s.family_entry(name);
                        if fam.help.is_some() {
                            let p = format!("line {line}: a second `# HELP` for {name}");
                            s.order_problems.push(p);
                        } else {
                            s.family_entry(name).help = Some(help);
                        }
                    }
                    "TYPE" => {
                        let (name, rest) = split_token(rest);
                        let (kind, extra) = split_token(rest);
                        if !is_metric_name(name) {
                            return Err(err("`# TYPE` needs a valid metric name"));
                        }
                        let Some(kind) = Kind::parse(kind) else {
                            return Err(err(
                                "`# TYPE` must be counter, gauge, histogram, summary or untyped",
                            ));
                        };
                        if !extra.is_empty() {
                            return Err(err("text after the type in `# TYPE`"));
                        }
                        let fam = s.family_entry(name);
                        if fam.kind.is_some() {
                            let p = format!("line {line}: a second `# TYPE` for {name}");
                            s.order_problems.push(p);
                        } else if !fam.samples.is_empty() {
                            let p = format!(
                                "line {line}: `# TYPE {name}` comes after samples of {name} (it must precede them)"
                            );
                            s.order_problems.push(p);
                        } else {
                            fam.kind = Some(kind);
                            fam.type_line = Some(line);
                        }
                    }
                    // Any other comment is allowed and ignored.
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(trimmed, line).map_err(|m| err(&m))?;
            let fam = s.family_of(&sample.name).to_string();
            s.family_entry(&fam).samples.push(sample);
        }
        Ok(s)
    }

    fn family_entry(&mut self, name: &str) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: None,
                    kind: None,
                    samples: Vec::new(),
                    type_line: None,
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// The family a sample name belongs to: itself when a family of that
    /// name is typed, else the histogram or summary it is a part of.
    fn family_of<'a>(&self, sample: &'a str) -> &'a str {
        let typed = |n: &str| {
            self.families
                .iter()
                .find(|f| f.name == n)
                .and_then(|f| f.kind)
        };
        if typed(sample).is_some() {
            return sample;
        }
        for (suffix, kinds) in [
            ("_bucket", &[Kind::Histogram][..]),
            ("_sum", &[Kind::Histogram, Kind::Summary][..]),
            ("_count", &[Kind::Histogram, Kind::Summary][..]),
        ] {
            if let Some(base) = sample.strip_suffix(suffix)
                && typed(base).is_some_and(|k| kinds.contains(&k))
            {
                return base;
            }
        }
        sample
    }

    /// The family named `name` (for a histogram: its base name, not `_bucket`).
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Every sample named exactly `name` (e.g. `x_bucket`), in order.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .iter()
            .flat_map(|f| f.samples.iter())
            .filter(move |s| s.name == name)
    }

    /// The value of the sample named `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name)
            .find(|s| s.has_exactly(labels))
            .map(|s| s.value)
    }

    /// The sum of every sample named `name` whose labels include `labels`
    /// (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|s| s.has_labels(labels))
            .map(|s| s.value)
            .sum()
    }

    /// The distinct values label `key` takes on samples named `name`.
    pub fn label_values(&self, name: &str, key: &str) -> BTreeSet<String> {
        self.samples(name)
            .filter_map(|s| s.label(key).map(str::to_string))
            .collect()
    }

    /// The histogram series of family `name` whose labels (without `le`)
    /// are exactly `labels`; `None` if it has no sample at all.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        let bucket = format!("{name}_bucket");
        let mut h = Histogram {
            buckets: Vec::new(),
            sum: None,
            count: None,
        };
        let mut any = false;
        for s in self.samples(&bucket) {
            if s.series_key() == want
                && let Some(le) = s.label("le")
            {
                h.buckets
                    .push((parse_value(le).unwrap_or(f64::NAN), s.value));
                any = true;
            }
        }
        h.sum = self.get(&format!("{name}_sum"), labels);
        h.count = self.get(&format!("{name}_count"), labels);
        any |= h.sum.is_some() || h.count.is_some();
        any.then_some(h)
    }

    /// Everything a correct exporter never produces (see the module docs);
    /// empty when the exposition is consistent.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.order_problems.clone();
        for f in &self.families {
            if f.kind.is_none() {
                if let Some(s) = f.samples.first() {
                    out.push(format!(
                        "line {}: sample {} has no `# TYPE` line for its family",
                        s.line, s.name
                    ));
                }
                continue;
            }
            let mut seen = BTreeSet::new();
            for s in &f.samples {
                let mut key = s.labels.clone();
                key.sort();
                if !seen.insert((s.name.clone(), key)) {
                    out.push(format!("line {}: series {s} appears twice", s.line));
                }
                if f.kind == Some(Kind::Counter) && (s.value.is_nan() || s.value < 0.0) {
                    out.push(format!("line {}: counter {s} is negative or NaN", s.line));
                }
            }
            if f.kind == Some(Kind::Histogram) {
                out.extend(self.histogram_problems(f));
            }
        }
        out
    }

    fn histogram_problems(&self, f: &Family) -> Vec<String> {
        let mut out = Vec::new();
        let bucket = format!("{}_bucket", f.name);
        let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
        for s in &f.samples {
            series.entry(s.series_key()).or_default();
            if s.name == bucket {
                if s.label("le").is_none() {
                    out.push(format!("line {}: bucket {s} has no `le` label", s.line));
                    continue;
                }
                series.entry(s.series_key()).or_default().push(s);
            }
        }
        for (key, buckets) in series {
            let labels: Vec<(&str, &str)> =
                key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let shown = format!("{}{:?}", f.name, labels);
            let mut prev: Option<(f64, f64)> = None;
            for b in &buckets {
                let le_text = b.label("le").unwrap_or_default();
                let Ok(le) = parse_value(le_text) else {
                    out.push(format!("line {}: `le` {le_text:?} is not a number", b.line));
                    continue;
                };
                if let Some((ple, pc)) = prev {
                    if le.is_nan() || le <= ple {
                        out.push(format!(
                            "line {}: {shown}: bucket le={le_text} is not above the previous le={ple}",
                            b.line
                        ));
                    }
                    if b.value < pc {
                        out.push(format!(
                            "line {}: {shown}: bucket le={le_text} holds {} but the bucket before it holds {pc}: buckets must be cumulative",
                            b.line, b.value
                        ));
                    }
                }
                prev = Some((le, b.value));
            }
            let inf = buckets
                .iter()
                .find(|b| b.label("le").and_then(|t| parse_value(t).ok()) == Some(f64::INFINITY));
            let count = self.get(&format!("{}_count", f.name), &labels);
            let sum = self.get(&format!("{}_sum", f.name), &labels);
            match inf {
                None => out.push(format!("{shown}: no `le=\"+Inf\"` bucket")),
                Some(b) => match count {
                    Some(c) if c != b.value => out.push(format!(
                        "{shown}: the +Inf bucket holds {} but _count is {c}: they must be equal",
                        b.value
                    )),
                    _ => {}
                },
            }
            if count.is_none() {
                out.push(format!("{shown}: no _count sample"));
            }
            if sum.is_none() {
                out.push(format!("{shown}: no _sum sample"));
            }
        }
        out
    }

    /// `Ok` when [`problems`](Self::problems) is empty, else all of them,
    /// one per line.
    pub fn check(&self) -> Result<(), String> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("\n"))
        }
    }

    /// Names of the families that have samples or a type but no `# HELP`.
    pub fn missing_help(&self) -> Vec<String> {
        self.families
            .iter()
            .filter(|f| f.help.as_deref().is_none_or(str::is_empty))
            .map(|f| f.name.clone())
            .collect()
    }
}

/// Splits off the first whitespace-separated token; the rest is trimmed at its start.
fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Undoes the format's escapes: `\\` and `\n` everywhere, `\"` in label values.
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            // HELP text may contain a lone backslash before other characters
            // in lenient exporters; label values may not.
            Some(other) if !quotes => {
                out.push('\\');
                out.push(other);
            }
            Some(other) => return Err(format!("unknown escape `\\{other}` in a label value")),
            None => return Err("a backslash at the end".to_string()),
        }
    }
    Ok(out)
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
pub fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => {
            // Rust also accepts "inf", "infinity", "nan": the format does not.
            let ok = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
            match s.parse::<f64>() {
                Ok(v) if ok => Ok(v),
                _ => Err(format!("{s:?} is not a sample value")),
            }
        }
    }
}

fn parse_sample(l: &str, line: usize) -> Result<Sample, String> {
    let end = l.find(['{', ' ', '\t']).unwrap_or(l.len());
    let name = &l[..end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is not a valid metric name"));
    }
    let mut rest = &l[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            r = r.trim_start_matches([' ', '\t']);
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r.find('=').ok_or("a label without `=`")?;
            let key = r[..eq].trim_matches([' ', '\t']);
            if !is_label_name(key) {
                return Err(format!("{key:?} is not a valid label name"));
            }
            r = r[eq + 1..].trim_start_matches([' ', '\t']);
            r = r
                .strip_prefix('"')
                .ok_or("a label value must be in double quotes")?;
            // Find the closing quote, skipping escaped characters.
            let mut close = None;
            let mut escaped = false;
            for (i, c) in r.char_indices() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    close = Some(i);
                    break;
                }
            }
            let close = close.ok_or("a label value without its closing quote")?;
            let value = unescape(&r[..close], true)?;
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("label {key:?} appears twice"));
            }
            labels.push((key.to_string(), value));
            r = r[close + 1..].trim_start_matches([' ', '\t']);
            if let Some(after) = r.strip_prefix(',') {
                r = after;
            } else if !r.starts_with('}') {
                return Err("labels must be separated by `,`".to_string());
            }
        }
        rest = r;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("the value must follow the name or labels after a space".to_string());
    }
    let mut parts = rest.split([' ', '\t']).filter(|p| !p.is_empty());
    let value = parse_value(parts.next().ok_or("a sample without a value")?)?;
    let timestamp = match parts.next() {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("{t:?} is not a timestamp (integer milliseconds)"))?,
        ),
    };
    if parts.next().is_some() {
        return Err("text after the timestamp".to_string());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP http_requests_total Requests answered, by method, route and status.
# TYPE http_requests_total counter
http_requests_total{method=\"GET\",route=\"/tasks/{id}\",status=\"200\"} 3
http_requests_total{method=\"POST\",route=\"/tasks\",status=\"201\"} 7
http_requests_total{method=\"GET\",route=\"/tasks/{id}\",status=\"404\"} 2
# HELP lat Latency in seconds.
# TYPE lat histogram
lat_bucket{route=\"/a\",le=\"0.005\"} 1
lat_bucket{route=\"/a\",le=\"0.1\"} 3
lat_bucket{route=\"/a\",le=\"+Inf\"} 4
lat_sum{route=\"/a\"} 1.25
lat_count{route=\"/a\"} 4
lat_bucket{route=\"/b\",le=\"0.005\"} 0
lat_bucket{route=\"/b\",le=\"0.1\"} 0
lat_bucket{route=\"/b\",le=\"+Inf\"} 1
lat_sum{route=\"/b\"} 7
lat_count{route=\"/b\"} 1
# A comment.
# HELP inflight In flight.
# TYPE inflight gauge
inflight 0
# HELP weird Escapes \\\\ and \\n in help.
# TYPE weird gauge
weird{v=\"a\\\"b\\\\c\\nd\", w = \"x\" ,} NaN 1700000000000
weird{v=\"inf\"} +Inf
weird{v=\"neg\"} -1.5e-3
";

    #[test]
    fn parses_families_help_types_and_labels() {
        let s = Scrape::parse(GOOD).unwrap();
        assert_eq!(s.families.len(), 4);
        let f = s.family("http_requests_total").unwrap();
        assert_eq!(f.kind, Some(Kind::Counter));
        assert_eq!(
            f.help.as_deref(),
            Some("Requests answered, by method, route and status.")
        );
        assert_eq!(f.samples.len(), 3);
        assert_eq!(
            s.get(
                "http_requests_total",
                &[
                    ("route", "/tasks/{id}"),
                    ("status", "404"),
                    ("method", "GET")
                ]
            ),
            Some(2.0)
        );
        // Exact label sets only.
        assert_eq!(s.get("http_requests_total", &[("method", "GET")]), None);
        assert_eq!(s.sum("http_requests_total", &[("method", "GET")]), 5.0);
        assert_eq!(s.sum("http_requests_total", &[]), 12.0);
        assert_eq!(s.sum("nothing", &[]), 0.0);
        assert_eq!(
            s.label_values("http_requests_total", "route"),
            ["/tasks".to_string(), "/tasks/{id}".to_string()].into()
        );
        assert_eq!(s.get("inflight", &[]), Some(0.0));
        assert!(s.check().is_ok(), "{:?}", s.check());
        assert!(s.missing_help().is_empty());
    }

    #[test]
    fn unescapes_label_values_and_reads_special_values() {
        let s = Scrape::parse(GOOD).unwrap();
        let f = s.family("weird").unwrap();
        assert_eq!(f.help.as_deref(), Some("Escapes \\ and \n in help."));
        let w = &f.samples[0];
        assert_eq!(w.label("v"), Some("a\"b\\c\nd"));
        assert_eq!(w.label("w"), Some("x"));
        assert!(w.value.is_nan());
        assert_eq!(w.timestamp, Some(1_700_000_000_000));
        assert_eq!(s.get("weird", &[("v", "inf")]), Some(f64::INFINITY));
        assert_eq!(s.get("weird", &[("v", "neg")]), Some(-0.0015));
    }

    #[test]
    fn groups_histogram_parts_and_reads_a_series() {
        let s = Scrape::parse(GOOD).unwrap();
        let f = s.family("lat").unwrap();
        assert_eq!(f.kind, Some(Kind::Histogram));
        assert_eq!(f.samples.len(), 10);
        assert!(s.family("lat_bucket").is_none());
        let h = s.histogram("lat", &[("route", "/a")]).unwrap();
        assert_eq!(
            h.buckets,
            vec![(0.005, 1.0), (0.1, 3.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(h.sum, Some(1.25));
        assert_eq!(h.count, Some(4.0));
        assert!(s.histogram("lat", &[("route", "/c")]).is_none());
        assert_eq!(s.sum("lat_count", &[]), 5.0);
    }

    #[test]
    fn finds_inconsistent_histograms() {
        let bad = "\
# TYPE h histogram
h_bucket{le=\"0.1\"} 5
h_bucket{le=\"1\"} 3
h_bucket{le=\"+Inf\"} 6
h_sum 1
h_count 7
# TYPE g histogram
g_bucket{le=\"0.1\"} 1
g_sum 1
g_count 1
";
        let s = Scrape::parse(bad).unwrap();
        let p = s.check().unwrap_err();
        assert!(p.contains("cumulative"), "{p}");
        assert!(p.contains("_count is 7"), "{p}");
        assert!(p.contains("no `le=\"+Inf\"` bucket"), "{p}");
    }

    #[test]
    fn finds_untyped_samples_late_types_duplicates_and_missing_help() {
        let bad = "\
x 1
# TYPE x counter
# TYPE y counter
y -1
y 2
# HELP z Z.
# TYPE z gauge
z 1
";
        let s = Scrape::parse(bad).unwrap();
        let p = s.check().unwrap_err();
        assert!(p.contains("comes after samples of x"), "{p}");
        assert!(p.contains("sample x has no `# TYPE`"), "{p}");
        assert!(p.contains("negative"), "{p}");
        assert!(p.contains("appears twice"), "{p}");
        assert_eq!(s.missing_help(), vec!["x".to_string(), "y".to_string()]);
    }

    #[test]
    fn rejects_malformed_lines() {
        for (text, why) in [
            ("x{a=\"1\" 1", "closing brace"),
            ("x{a=1} 1", "unquoted value"),
            ("x{a=\"1\"} ", "no value"),
            ("x{a=\"1\"} abc", "bad value"),
            ("x{a=\"1\"} inf", "lowercase inf"),
            ("x{a=\"\\t\"} 1", "unknown escape"),
            ("x{a=\"1\",a=\"2\"} 1", "duplicate label"),
            ("x{1a=\"1\"} 1", "bad label name"),
            ("9x 1", "bad metric name"),
            ("x 1 2 3", "trailing text"),
            ("x 1 1.5", "float timestamp"),
            ("# TYPE x countr", "bad type"),
            ("x{a=\"1\"}1", "no space before value"),
        ] {
            let e = Scrape::parse(text);
            assert!(e.is_err(), "{why}: {text:?} parsed as {e:?}");
        }
        let e = Scrape::parse("ok 1\nx{a=1} 1\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn reads_what_the_prometheus_crate_writes_for_a_summary_layout() {
        let text = "\
# HELP rpc Summary.
# TYPE rpc summary
rpc{quantile=\"0.5\"} 0.1
rpc_sum 3
rpc_count 9
";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.family("rpc").unwrap().samples.len(), 3);
        assert!(s.check().is_ok());
        assert_eq!(s.get("rpc_count", &[]), Some(9.0));
    }
}
