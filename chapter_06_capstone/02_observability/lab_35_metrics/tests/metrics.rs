//! The grader for lab 35: the tasks service with Prometheus metrics.
//!
//! Tests 01 to 18 are the chapter's shared suite (`labkit::tasks_suite!`):
//! the whole API, as in labs 32 to 34. Each suite test starts a fresh server
//! on a fresh database, and at its end the *observer* below scrapes
//! `/metrics` and requires `http_requests_total` to hold exactly the
//! exchanges the suite made, per (method, route template, status), and the
//! latency histogram's `_count` per (method, route) to match. So the suite's
//! own CRUD traffic grades the counters, and every suite test fails until
//! they are right.
//!
//! Tests from 20 are this lab's own: the exposition format, exact counts of
//! known traffic, bounded label values, the histogram's unit and
//! consistency, the in-flight gauge while the test holds requests open
//! (head and half a body sent: no sleeps), the pool gauges while the test
//! holds a table lock that requests wait on, error statuses, a 503 through
//! a fault-injecting proxy, and how `/metrics` counts itself.
//!
//! Every scrape is parsed by `labkit::prom`, a strict parser of the text
//! format, and must pass its consistency checks (a `# TYPE` for every
//! family, cumulative buckets, the `+Inf` bucket equal to `_count`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::client::Client;
use labkit::faults::{Fault, FaultProxy};
use labkit::prom::{Kind, Scrape};
use labkit::server::Server;
use labkit::services::TestDb;
use labkit::tasks_suite::{App, Exchange, UNMATCHED};
use labkit::wait::within_async;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tasks_metrics");

/// The deadline of one database call made by the test.
const CALL: Duration = Duration::from_secs(10);

/// How long a fact the test waits for (a held request reaching the
/// server, a connection going back to the pool) may take to come true.
const SETTLE: Duration = Duration::from_secs(5);

/// The route templates of the service, as axum writes them.
const TEMPLATES: [&str; 2] = ["/tasks", "/tasks/{id}"];

/// The standard methods: any other method must share one label value.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT",
];

fn spawn(db_url: &str, env: &[(&str, &str)]) -> Server {
    let mut b = Server::builder(BIN).env("DATABASE_URL", db_url);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.spawn()
}

/// The suite's app: a fresh database, a fresh server, the metrics observer.
fn app() -> App {
    let db = labkit::services::postgres();
    let server = spawn(&db.url, &[]);
    App::new(server).keep(db).observer(observe)
}

labkit::tasks_suite! { app: crate::app }

// ---------------------------------------------------------------------------
// Scraping and comparing
// ---------------------------------------------------------------------------

/// GETs `/metrics` from `server`, checks the status, the Content-Type, the
/// syntax and the consistency of the exposition; returns it parsed.
#[track_caller]
fn scrape(http: &reqwest::blocking::Client, server: &Server, why: &str) -> Scrape {
    let url = format!("http://{}/metrics", server.addr());
    let did = format!("sent GET /metrics ({why})");
    let r = match http.get(&url).send() {
        Ok(r) => r,
        Err(e) => server
            .report()
            .did(&did)
            .expected("a response")
            .got(labkit::report::error_chain(&e))
            .hint("is GET /metrics routed, and does the server still run?")
            .fail(),
    };
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().unwrap_or_default();
    if status != 200 {
        server
            .report()
            .did(&did)
            .expected("200 with the metrics in Prometheus text format")
            .got(format!(
                "status {status}, body {}",
                labkit::report::show(&text)
            ))
            .hint(
                "add the route GET /metrics that renders the registry with prometheus::TextEncoder",
            )
            .fail();
    }
    let params: Vec<String> = ctype
        .split(';')
        .map(|p| p.trim().replace(' ', "").to_ascii_lowercase())
        .collect();
    if params.first().map(String::as_str) != Some("text/plain")
        || !params.iter().any(|p| p == "version=0.0.4")
    {
        server
            .report()
            .did(&did)
            .expected("Content-Type: text/plain; version=0.0.4 (what Prometheus expects of the text format)")
            .got(format!("Content-Type: {ctype:?}"))
            .hint("set the header to prometheus::TEXT_FORMAT (or TextEncoder::format_type())")
            .fail();
    }
    let parsed = match Scrape::parse(&text) {
        Ok(s) => s,
        Err(e) => server
            .report()
            .did(&did)
            .expected("text exposition format 0.0.4 that parses")
            .got(format!("a syntax error: {e}"))
            .quote("[your /metrics]", text.as_bytes())
            .hint("render with prometheus::TextEncoder rather than by hand")
            .fail(),
    };
    if let Err(problems) = parsed.check() {
        server
            .report()
            .did(&did)
            .expected("a consistent exposition: a # TYPE for every family, cumulative buckets, the +Inf bucket equal to _count, no series twice")
            .got(problems)
            .quote("[your /metrics]", text.as_bytes())
            .hint("register prometheus metric types (IntCounterVec, HistogramVec, IntGauge) instead of writing the format yourself")
            .fail();
    }
    parsed
}

/// `(method, route, status)` -> count, from `http_requests_total`, leaving
/// out `/metrics` (whether it counts itself is checked by test 28).
fn counts(s: &Scrape) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for x in s.samples("http_requests_total") {
        let l = |k| x.label(k).unwrap_or("<none>").to_string();
        if l("route") == "/metrics" {
            continue;
        }
        *out.entry((l("method"), l("route"), l("status")))
            .or_insert(0.0) += x.value;
    }
    out
}

/// `(method, route)` -> histogram `_count`, leaving out `/metrics`.
fn histogram_counts(s: &Scrape) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for x in s.samples("http_request_duration_seconds_count") {
        let l = |k| x.label(k).unwrap_or("<none>").to_string();
        if l("route") == "/metrics" {
            continue;
        }
        *out.entry((l("method"), l("route"))).or_insert(0.0) += x.value;
    }
    out
}

fn show_counts<K: std::fmt::Debug>(m: &BTreeMap<K, f64>) -> String {
    if m.is_empty() {
        return "(none)".to_string();
    }
    m.iter()
        .map(|(k, v)| format!("{k:?} = {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the test made: one request, as the metrics must count it.
#[derive(Debug, Clone)]
struct Sent {
    method: String,
    /// The template, or [`UNMATCHED`].
    route: &'static str,
    /// 0: abandoned (may be counted once with any status, or not at all).
    status: u16,
    path: String,
}

impl From<&Exchange> for Sent {
    fn from(e: &Exchange) -> Sent {
        Sent {
            method: e.method.clone(),
            route: e.route,
            status: e.status,
            path: e.path.clone(),
        }
    }
}

/// Compares the scraped counters and histogram counts with `sent`, exactly;
/// returns the problems (empty when they agree). The label value shared by
/// unmatched paths, and by non-standard methods, is whatever the service
/// chose, as long as it is one value and not a raw path.
fn compare(s: &Scrape, sent: &[Sent]) -> Vec<String> {
    let mut problems = Vec::new();
    let got = counts(s);
    let raw_paths: BTreeSet<String> = sent
        .iter()
        .map(|x| x.path.split('?').next().unwrap_or("").to_string())
        .filter(|p| !TEMPLATES.contains(&p.as_str()))
        .collect();
    // The route value of unmatched paths: the one route value that is
    // not a template.
    let others: BTreeSet<&str> = got
        .keys()
        .map(|(_, r, _)| r.as_str())
        .filter(|r| !TEMPLATES.contains(r))
        .collect();
    for r in &others {
        if raw_paths.contains(*r) || r.contains("/tasks/") && !TEMPLATES.contains(r) {
            problems.push(format!(
                "route label {r:?} is a raw path: the label must be the matched template (/tasks/{{id}}), and one shared value for paths no route matches"
            ));
        }
    }
    if others.len() > 1 {
        problems.push(format!(
            "requests no route matched are spread over {} route values {others:?}: they must share one value",
            others.len()
        ));
    }
    let unmatched = others.iter().next().copied().unwrap_or(UNMATCHED);
    let method_others: BTreeSet<&str> = got
        .keys()
        .map(|(m, _, _)| m.as_str())
        .filter(|m| !STANDARD_METHODS.contains(m))
        .collect();
    let other_method = method_others.iter().next().copied().unwrap_or("<other>");
    let key_of = |x: &Sent| {
        let method = if STANDARD_METHODS.contains(&x.method.as_str()) {
            x.method.clone()
        } else {
            other_method.to_string()
        };
        let route = if x.route == UNMATCHED {
            unmatched.to_string()
        } else {
            x.route.to_string()
        };
        (method, route)
    };
    let mut want: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut abandoned: BTreeMap<(String, String), f64> = BTreeMap::new();
    for x in sent {
        let (m, r) = key_of(x);
        if x.status == 0 {
            *abandoned.entry((m, r)).or_insert(0.0) += 1.0;
        } else {
            *want.entry((m, r, x.status.to_string())).or_insert(0.0) += 1.0;
        }
    }
    // Missing or extra counts, allowing one count (any status) per
    // abandoned request of a (method, route).
    let mut extra: BTreeMap<(String, String), f64> = BTreeMap::new();
    let keys: BTreeSet<_> = want.keys().chain(got.keys()).cloned().collect();
    for k in keys {
        let w = want.get(&k).copied().unwrap_or(0.0);
        let g = got.get(&k).copied().unwrap_or(0.0);
        if g < w {
            problems.push(format!(
                "{{method={:?}, route={:?}, status={:?}}}: {g} counted, but the test got {w} such responses",
                k.0, k.1, k.2
            ));
        } else if g > w {
            *extra.entry((k.0.clone(), k.1.clone())).or_insert(0.0) += g - w;
        }
    }
    for ((m, r), n) in extra {
        let allowed = abandoned
            .get(&(m.clone(), r.clone()))
            .copied()
            .unwrap_or(0.0);
        if n > allowed {
            problems.push(format!(
                "{{method={m:?}, route={r:?}}}: {n} more counted than the test got responses{}",
                if allowed > 0.0 {
                    format!(" (of which {allowed} may be requests the test abandoned)")
                } else {
                    String::new()
                }
            ));
        }
    }
    // The histogram counts the same requests as the counter.
    let mut by_route: BTreeMap<(String, String), f64> = BTreeMap::new();
    for ((m, r, _), v) in &got {
        *by_route.entry((m.clone(), r.clone())).or_insert(0.0) += v;
    }
    let hist = histogram_counts(s);
    let keys: BTreeSet<_> = by_route.keys().chain(hist.keys()).cloned().collect();
    for k in keys {
        let c = by_route.get(&k).copied().unwrap_or(0.0);
        let h = hist.get(&k).copied().unwrap_or(0.0);
        if c != h {
            problems.push(format!(
                "http_request_duration_seconds_count{{method={:?}, route={:?}}} is {h}, but http_requests_total counts {c} such requests: observe every request you count, once",
                k.0, k.1
            ));
        }
    }
    problems
}

/// The suite's observer: the counters hold exactly the suite's exchanges.
fn observe(app: &App, exchanges: &[Exchange]) {
    let http = labkit::http::client();
    let s = scrape(&http, app.server(), "after the suite test's traffic");
    let sent: Vec<Sent> = exchanges.iter().map(Sent::from).collect();
    let problems = compare(&s, &sent);
    if !problems.is_empty() {
        let mut made: BTreeMap<String, usize> = BTreeMap::new();
        for x in &sent {
            *made
                .entry(format!("{} {} -> {}", x.method, x.route, x.status))
                .or_insert(0) += 1;
        }
        let made: Vec<String> = made.iter().map(|(k, n)| format!("{n} x {k}")).collect();
        app.server()
            .report()
            .did(format!(
                "made the {} requests of this suite test on a fresh server, then scraped /metrics",
                sent.len()
            ))
            .did(format!("the requests, by route template and the status the test got:\n{}", made.join("\n")))
            .expected("http_requests_total{method, route, status} to count exactly those (route = the matched template; status = the status the client got), and the histogram's _count per (method, route) to match")
            .got(format!(
                "{}\n[test] scraped counters:\n{}",
                problems.join("\n"),
                show_counts(&counts(&s))
            ))
            .hint("count in a middleware around the whole router, after the response exists, with its final status; route = the template the path matches (/tasks/{id}), and one shared value for paths no route matches")
            .fail();
    }
}

// ---------------------------------------------------------------------------
// The lab's own world
// ---------------------------------------------------------------------------

/// One test's service: a server on a fresh database (maybe behind a fault
/// proxy), a client, a runtime for the test's own database calls.
/// Fields drop in order: the server first, the database last.
struct Lab {
    server: Server,
    http: reqwest::blocking::Client,
    rt: tokio::runtime::Runtime,
    proxy: Option<FaultProxy>,
    db: TestDb,
}

/// One response.
#[derive(Debug, Clone)]
struct Resp {
    did: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        labkit::http::values(&self.headers, name).into_iter().next()
    }
}

fn lab(env: &[(&str, &str)]) -> Lab {
    let db = labkit::services::postgres();
    let server = spawn(&db.url, env);
    Lab {
        server,
        http: labkit::http::client(),
        rt: labkit::wait::runtime(2),
        proxy: None,
        db,
    }
}

/// A server whose database connection runs through a fault proxy.
fn lab_behind_proxy(env: &[(&str, &str)]) -> Lab {
    let db = labkit::services::postgres();
    let proxy = FaultProxy::for_url(&db.url);
    let server = spawn(proxy.url(), env);
    Lab {
        server,
        http: labkit::http::client(),
        rt: labkit::wait::runtime(2),
        proxy: Some(proxy),
        db,
    }
}

impl Lab {
    fn report(&self) -> Report {
        self.server.report()
    }

    #[track_caller]
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        let did = format!(
            "sent {method} {path}{}",
            body.map(|b| format!(" {}", labkit::report::show(b)))
                .unwrap_or_default()
        );
        let url = format!("http://{}{path}", self.server.addr());
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method token");
        let mut rb = self.http.request(m, &url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                rb = rb.header("content-type", "application/json");
            }
            rb = rb.body(b.to_string());
        }
        match rb.send() {
            Ok(r) => Resp {
                did,
                status: r.status().as_u16(),
                headers: r
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect(),
                body: r.text().unwrap_or_default(),
            },
            Err(e) => self
                .report()
                .did(did)
                .expected("a response")
                .got(labkit::report::error_chain(&e))
                .hint("does the server still run? see its stderr below")
                .fail(),
        }
    }

    /// Sends, requires `status`, records the exchange in `sent`.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    fn expect(
        &self,
        sent: &mut Vec<Sent>,
        method: &str,
        path: &str,
        route: &'static str,
        headers: &[(&str, &str)],
        body: Option<&str>,
        status: u16,
    ) -> Resp {
        let r = self.send(method, path, headers, body);
        if r.status != status {
            self.report()
                .did(&r.did)
                .expected(format!("status {status}"))
                .got(format!(
                    "status {}, body {}",
                    r.status,
                    labkit::report::show(&r.body)
                ))
                .hint("the API is lab 33's; this test needs it working to count its traffic")
                .fail();
        }
        sent.push(Sent {
            method: method.to_string(),
            route,
            status,
            path: path.to_string(),
        });
        r
    }

    /// Creates a task; returns its id.
    #[track_caller]
    fn create(&self, sent: &mut Vec<Sent>, title: &str) -> String {
        let body = json!({ "title": title }).to_string();
        let r = self.expect(sent, "POST", "/tasks", "/tasks", &[], Some(&body), 201);
        match r.json().get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => self
                .report()
                .did(&r.did)
                .expected("a task with a string id")
                .got(&r.body)
                .fail(),
        }
    }

    #[track_caller]
    fn scrape(&self, why: &str) -> Scrape {
        scrape(&self.http, &self.server, why)
    }

    /// Fails unless the scraped counters are exactly `sent`.
    #[track_caller]
    fn expect_counted(&self, s: &Scrape, sent: &[Sent], did: &str, hint: &str) {
        let problems = compare(s, sent);
        if !problems.is_empty() {
            self.report()
                .did(did)
                .expected("http_requests_total to count exactly these requests by (method, route template, status), and the histogram's _count to match")
                .got(format!(
                    "{}\n[test] scraped counters:\n{}",
                    problems.join("\n"),
                    show_counts(&counts(s))
                ))
                .hint(hint)
                .fail();
        }
    }

    /// Whether the service counts `/metrics` itself: 1 if a scrape sees
    /// itself in flight, else 0. Test 28 checks the choice is kept
    /// everywhere; here it is the in-flight baseline.
    fn self_in_flight(&self) -> i64 {
        let s = self.scrape("to learn the in-flight gauge of an idle server");
        in_flight(&self.report(), &s)
    }

    /// The test's own connection to the database (not through the proxy).
    fn connect_db(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        self.rt.block_on(async {
            within_async(
                CALL,
                "PgConnection::connect (the test's own connection)",
                sqlx::PgConnection::connect(&self.db.url),
            )
            .await
            .unwrap_or_else(|e| {
                Report::new(format!("connected to {}", self.db.url))
                    .got(e)
                    .fail()
            })
        })
    }
}

/// The one sample of a gauge without labels.
#[track_caller]
fn in_flight(report: &Report, s: &Scrape) -> i64 {
    match s.get("http_requests_in_flight", &[]) {
        Some(v) => v as i64,
        None => report
            .clone()
            .did("scraped /metrics")
            .expected("a gauge http_requests_in_flight (no labels)")
            .got(format!(
                "no such sample; families: {:?}",
                s.families.iter().map(|f| &f.name).collect::<Vec<_>>()
            ))
            .hint("register an IntGauge named http_requests_in_flight")
            .fail(),
    }
}

/// `(size, idle, in_use, max)` of the pool gauges, in either naming the
/// README allows.
fn pool(s: &Scrape) -> Result<(f64, f64, f64, f64), String> {
    let max = s
        .get("db_pool_max_connections", &[])
        .ok_or("no gauge db_pool_max_connections")?;
    if let (Some(idle), Some(in_use)) = (
        s.get("db_pool_connections", &[("state", "idle")]),
        s.get("db_pool_connections", &[("state", "in_use")]),
    ) {
        return Ok((idle + in_use, idle, in_use, max));
    }
    if let (Some(size), Some(idle)) = (s.get("db_pool_size", &[]), s.get("db_pool_idle", &[])) {
        return Ok((size, idle, size - idle, max));
    }
    Err("neither db_pool_connections{state=\"idle\"} and {state=\"in_use\"} nor db_pool_size and db_pool_idle".to_string())
}

/// Polls `read` (with `labkit::wait::settle`) until `done` holds or
/// [`SETTLE`] passes; then fails showing the last value read. For facts
/// with no event to wait on: a held request reaching the server, a
/// connection going back to the pool.
#[track_caller]
fn wait_until_scraped<T: Copy + std::fmt::Debug>(
    server: &Server,
    what: &str,
    hint: &str,
    read: impl FnMut() -> T,
    done: impl Fn(T) -> bool,
) -> T {
    match labkit::wait::settle(SETTLE, read, done) {
        Ok(v) => v,
        Err(last) => server
            .report()
            .did(format!("waited for {what}"))
            .expected(format!("it within {SETTLE:?}"))
            .got(format!("the last scrape said {last:?}"))
            .hint(hint)
            .fail(),
    }
}

/// A request held open: its head and half its body sent.
struct Held {
    client: Client,
    rest: Vec<u8>,
}

/// Sends the head and the first half of a POST /tasks body, no more.
fn hold(server: &Server, title: &str) -> Held {
    let body = json!({ "title": title }).to_string().into_bytes();
    let req = labkit::http::request(
        "POST",
        "/tasks",
        &[("Content-Type", "application/json")],
        &body,
    );
    let cut = req.len() - body.len() / 2;
    let mut client = Client::connect_to(server);
    client.set_read_deadline(SETTLE);
    client.send(&req[..cut]);
    Held {
        client,
        rest: req[cut..].to_vec(),
    }
}

// ---------------------------------------------------------------------------
// The lab's tests
// ---------------------------------------------------------------------------

// GET /metrics is Prometheus text format 0.0.4 with its Content-Type, and every family it needs has # HELP and # TYPE.
#[test]
fn test_20_metrics_page_is_prometheus_text_with_help_and_type() {
    let lab = lab(&[("DB_MAX_CONNECTIONS", "7")]);
    let mut sent = Vec::new();
    let id = lab.create(&mut sent, "first");
    lab.expect(
        &mut sent,
        "GET",
        &format!("/tasks/{id}"),
        "/tasks/{id}",
        &[],
        None,
        200,
    );
    let s = lab.scrape("after one create and one get");
    let missing = s.missing_help();
    if !missing.is_empty() {
        lab.report()
            .did("scraped /metrics after one POST and one GET")
            .expected(
                "a # HELP line (a sentence for the human reading the dashboard) for every family",
            )
            .got(format!("no # HELP for {missing:?}"))
            .hint("give every metric a help text in its Opts")
            .fail();
    }
    let mut want = vec![
        ("http_requests_total", Kind::Counter),
        ("http_request_duration_seconds", Kind::Histogram),
        ("http_requests_in_flight", Kind::Gauge),
        ("db_pool_max_connections", Kind::Gauge),
    ];
    if s.family("db_pool_size").is_some() {
        want.push(("db_pool_size", Kind::Gauge));
        want.push(("db_pool_idle", Kind::Gauge));
    } else {
        want.push(("db_pool_connections", Kind::Gauge));
    }
    for (name, kind) in want {
        let got = s.family(name).map(|f| f.kind);
        if got != Some(Some(kind)) {
            lab.report()
                .did("scraped /metrics after one POST and one GET")
                .expected(format!("a family {name} of type {kind:?}"))
                .got(match got {
                    None => "no such family".to_string(),
                    Some(k) => format!("type {k:?}"),
                })
                .hint("see the README's table of metrics: names, types and labels are the contract dashboards rely on")
                .fail();
        }
    }
    let max = s.get("db_pool_max_connections", &[]);
    if max != Some(7.0) {
        lab.report()
            .did("started the server with DB_MAX_CONNECTIONS=7 and scraped /metrics")
            .expected("db_pool_max_connections 7")
            .got(format!("{max:?}"))
            .hint("export the pool's configured maximum")
            .fail();
    }
    let problems = compare(&s, &sent);
    if !problems.is_empty() {
        lab.report()
            .did("sent one POST /tasks (201) and one GET /tasks/{id} (200), then scraped /metrics")
            .expected("one count each in http_requests_total")
            .got(problems.join("\n"))
            .hint("count in a middleware around the router, after the response exists")
            .fail();
    }
}

// Known traffic gives exact counts per route template and status; the histogram counts the same requests, in seconds, with cumulative buckets.
#[test]
fn test_21_known_traffic_gives_exact_counts_and_a_histogram_in_seconds() {
    let lab = lab(&[]);
    let mut sent = Vec::new();
    let started = Instant::now();
    let ids: Vec<String> = (0..7)
        .map(|i| lab.create(&mut sent, &format!("t{i}")))
        .collect();
    for id in &ids[..3] {
        lab.expect(
            &mut sent,
            "GET",
            &format!("/tasks/{id}"),
            "/tasks/{id}",
            &[],
            None,
            200,
        );
    }
    for unknown in ["4b0c2f7e-0000-4000-8000-000000000001", "not-a-uuid"] {
        lab.expect(
            &mut sent,
            "GET",
            &format!("/tasks/{unknown}"),
            "/tasks/{id}",
            &[],
            None,
            404,
        );
    }
    for p in ["/nope/1", "/nope/2"] {
        lab.expect(&mut sent, "GET", p, UNMATCHED, &[], None, 404);
    }
    lab.expect(&mut sent, "GET", "/tasks?limit=2", "/tasks", &[], None, 200);
    let wall = started.elapsed().as_secs_f64();

    let s = lab.scrape("after the known traffic");
    lab.expect_counted(
        &s,
        &sent,
        "sent, one at a time: 7 POST /tasks (201), 3 GET /tasks/{id} of distinct ids (200), GET of an unknown and of a non-UUID id (404), GET /nope/1 and /nope/2 (404), GET /tasks?limit=2 (200); then scraped /metrics",
        "route is the template the path matches (/tasks/{id}), never the raw path; unmatched paths share one value; count after the response, with its status",
    );

    // The histogram: one series per (method, route), in seconds.
    let mut total_sum = 0.0;
    for x in s.samples("http_request_duration_seconds_sum") {
        if x.label("route") == Some("/metrics") {
            continue;
        }
        if x.value.is_nan() || x.value <= 0.0 {
            lab.report()
                .did("sent known traffic one request at a time, then scraped /metrics")
                .expected("every http_request_duration_seconds_sum above 0 (each request took some time)")
                .got(format!("{x}"))
                .hint("observe the elapsed time of each request, as seconds in an f64 (Duration::as_secs_f64)")
                .fail();
        }
        total_sum += x.value;
    }
    if total_sum > wall {
        lab.report()
            .did(format!(
                "sent {} requests one after the other in {wall:.4} s (measured by the test around all of them), then scraped /metrics",
                sent.len()
            ))
            .expected(format!(
                "the durations to add up to at most {wall:.4} s: requests one after the other cannot take longer than the time around them"
            ))
            .got(format!("http_request_duration_seconds_sum adds up to {total_sum} s"))
            .hint("the unit is seconds (the name says so): observe elapsed.as_secs_f64(), not milliseconds")
            .fail();
    }
    let h = s
        .histogram(
            "http_request_duration_seconds",
            &[("method", "POST"), ("route", "/tasks")],
        )
        .unwrap_or_else(|| {
            lab.report()
                .did("sent 7 POST /tasks, then scraped /metrics")
                .expected(
                    "a series http_request_duration_seconds{method=\"POST\",route=\"/tasks\"}",
                )
                .got("none")
                .hint("the histogram's labels are method and route, no status")
                .fail()
        });
    let finite: Vec<f64> = h
        .buckets
        .iter()
        .map(|b| b.0)
        .filter(|le| le.is_finite())
        .collect();
    let smallest = finite.first().copied().unwrap_or(f64::INFINITY);
    let largest = finite.last().copied().unwrap_or(0.0);
    if finite.len() < 4 || smallest > 0.01 || largest < 1.0 {
        lab.report()
            .did("scraped the buckets of http_request_duration_seconds{method=\"POST\",route=\"/tasks\"}")
            .expected("buckets suited to a service answering in about a millisecond with a 5 s timeout: at least 4 finite bounds, the smallest at most 0.01 s, the largest at least 1 s")
            .got(format!("le bounds {finite:?}"))
            .hint("choose buckets from about 0.0005 s to a few seconds (and document them)")
            .fail();
    }
}

// Label values stay bounded: 50 distinct ids, 20 unknown paths and 5 invented methods add no series beyond the templates.
#[test]
fn test_22_label_values_stay_bounded_whatever_the_clients_send() {
    let lab = lab(&[]);
    let mut sent = Vec::new();
    let mut raw: Vec<String> = Vec::new();
    for i in 0..50 {
        let id = format!("4b0c2f7e-0000-4000-8000-{i:012}");
        let p = format!("/tasks/{id}");
        lab.expect(&mut sent, "GET", &p, "/tasks/{id}", &[], None, 404);
        raw.push(id);
    }
    for i in 0..20 {
        let p = format!("/unknown/path-{i}");
        lab.expect(&mut sent, "GET", &p, UNMATCHED, &[], None, 404);
        raw.push(p);
    }
    let mut invented = Vec::new();
    for i in 0..5 {
        let m = format!("BREW{i}");
        lab.expect(&mut sent, &m, "/tasks", "/tasks", &[], None, 405);
        invented.push(m);
    }
    let s = lab.scrape("after 50 ids, 20 unknown paths and 5 invented methods");
    let series = s.samples("http_requests_total").count();
    let mut leaked: Vec<String> = Vec::new();
    for f in &s.families {
        for x in &f.samples {
            for (k, v) in &x.labels {
                if raw
                    .iter()
                    .chain(invented.iter())
                    .any(|r| v.contains(r.as_str()))
                {
                    leaked.push(format!("{}: {k}={v:?}", x.name));
                }
            }
        }
    }
    if !leaked.is_empty() || series > 4 {
        lab.report()
            .did("sent GET /tasks/<id> for 50 distinct unknown ids, GET of 20 distinct unknown paths, and 5 requests to /tasks with invented methods BREW0..BREW4, then scraped /metrics")
            .expected("at most 4 series of http_requests_total (a label value is a time series forever: ids, paths and method tokens chosen by clients must not become label values)")
            .got(format!(
                "{series} series; label values taken from the requests: {}",
                if leaked.is_empty() { "none".to_string() } else { leaked.iter().take(5).cloned().collect::<Vec<_>>().join(", ") }
            ))
            .hint("route = the route template, or one shared value when nothing matched; method = the standard method, or one shared value for any other")
            .fail();
    }
    lab.expect_counted(
        &s,
        &sent,
        "sent GET /tasks/<id> for 50 unknown ids (404), 20 unknown paths (404), 5 invented methods on /tasks (405), then scraped /metrics",
        "every request counts, under its template",
    );
}

// The in-flight gauge shows exactly the requests the test holds open, and returns to its idle value when they finish, fail or vanish.
#[test]
fn test_23_in_flight_gauge_counts_held_requests_exactly() {
    let lab = lab(&[]);
    let base = lab.self_in_flight();
    let read_gauge = || {
        let s = lab.scrape("while the test holds requests open");
        in_flight(&lab.report(), &s)
    };
    let wait_for = |n: i64, did: &str| {
        wait_until_scraped(
            &lab.server,
            &format!("http_requests_in_flight to be {} ({did})", n + base),
            "increment the gauge when a request enters the middleware, decrement it when it leaves, however it leaves (a Drop guard)",
            read_gauge,
            |got| got == n + base,
        )
    };
    let mut held: Vec<Held> = (0..3)
        .map(|i| hold(&lab.server, &format!("held {i}")))
        .collect();
    wait_for(3, "3 POST /tasks held with half a body sent");
    // A fourth request whose client vanishes mid-body.
    let gone = hold(&lab.server, "vanishing");
    wait_for(4, "a fourth POST held");
    gone.client.reset();
    wait_for(3, "the fourth client reset its connection mid-body");
    // One finishes with a body that is not JSON: an early error return.
    let mut bad = held.pop().expect("three held");
    let broken: Vec<u8> = bad.rest.iter().map(|_| b'!').collect();
    bad.client.send(&broken);
    let r = labkit::http::read_response(&mut bad.client);
    if r.status != 400 {
        lab.report()
            .did("held a POST /tasks, then sent the rest of its body as '!' bytes (not JSON)")
            .expected("400")
            .got(r.describe())
            .fail();
    }
    wait_for(2, "one held POST finished with 400");
    for mut h in held {
        h.client.send(&h.rest);
        let r = labkit::http::read_response(&mut h.client);
        if r.status != 201 {
            lab.report()
                .did("held a POST /tasks with half a body, then sent the rest")
                .expected("201")
                .got(r.describe())
                .fail();
        }
    }
    let after = read_gauge();
    if after != base {
        lab.report()
            .did("held 4 POSTs; one client reset, one finished with 400, two with 201, all answered before this scrape")
            .expected(format!("http_requests_in_flight {base} (nothing in flight)"))
            .got(format!("{after}"))
            .hint("a request that returns early, fails, or whose client disappears must leave the gauge too: decrement in Drop")
            .fail();
    }
}

// Pool gauges add up and stay within the maximum, and show connections in use while requests wait on a table lock the test holds.
#[test]
fn test_24_pool_gauges_show_connections_in_use_while_requests_wait() {
    let lab = lab(&[("DB_MAX_CONNECTIONS", "5")]);
    let mut sent = Vec::new();
    lab.create(&mut sent, "warm");
    let check = |s: &Scrape, did: &str| -> (f64, f64, f64, f64) {
        match pool(s) {
            Ok((size, idle, in_use, max)) => {
                if max != 5.0 || idle < 0.0 || in_use < 0.0 || size > max {
                    lab.report()
                        .did(did)
                        .expected("idle >= 0, in_use >= 0, idle + in_use (the pool's size) <= db_pool_max_connections = 5")
                        .got(format!("size {size}, idle {idle}, in_use {in_use}, max {max}"))
                        .hint("read PgPool::size() and num_idle() when /metrics is scraped; in_use = size - idle")
                        .fail();
                }
                (size, idle, in_use, max)
            }
            Err(e) => lab
                .report()
                .did(did)
                .expected("the pool gauges of the README")
                .got(e)
                .fail(),
        }
    };
    check(
        &lab.scrape("with the server idle"),
        "scraped /metrics of an idle server",
    );
    let mut conn = lab.connect_db();
    lab.rt.block_on(async {
        use sqlx::Executor;
        within_async(CALL, "BEGIN; LOCK TABLE tasks", async {
            conn.execute("BEGIN").await?;
            conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                .await
        })
        .await
        .unwrap_or_else(|e| Report::new("locked the tasks table").got(e).fail());
    });
    let base = lab.self_in_flight();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let http = lab.http.clone();
            let url = format!("http://{}/tasks", lab.server.addr());
            std::thread::spawn(move || http.get(url).send().map(|r| r.status().as_u16()))
        })
        .collect();
    // (size, idle, in_use, in flight without a scrape), from one scrape.
    let read = |why: &str| {
        let s = lab.scrape(why);
        let (size, idle, in_use, _) = check(&s, &format!("scraped /metrics {why}"));
        (size, idle, in_use, in_flight(&lab.report(), &s) - base)
    };
    wait_until_scraped(
        &lab.server,
        "3 connections in use and 3 requests in flight while 3 GET /tasks wait on the test's table lock",
        "read the pool's numbers when /metrics is scraped, not at start: size() and num_idle(); (size, idle, in_use, in flight) above",
        || read("while 3 requests wait on a table lock"),
        |(_, _, in_use, flying)| in_use == 3.0 && flying == 3,
    );
    // A fourth request waits too, and its client vanishes: hyper drops
    // the request's future, which must leave the gauge all the same.
    let mut vanishing = Client::connect_to(&lab.server);
    vanishing.send(&labkit::http::request("GET", "/tasks", &[], b""));
    let wait_in_flight = |n: i64, did: &str| {
        wait_until_scraped(
            &lab.server,
            &format!("{n} requests in flight, not counting a scrape ({did})"),
            "a request whose client disconnects is dropped by hyper mid-flight: only a Drop guard runs then, not code after next.run(req).await",
            || in_flight(&lab.report(), &lab.scrape(did)) - base,
            |got| got == n,
        )
    };
    wait_in_flight(4, "a fourth GET /tasks waits on the lock");
    vanishing.reset();
    wait_in_flight(
        3,
        "the fourth client reset its connection while its request waited",
    );
    lab.rt.block_on(async {
        use sqlx::Executor;
        within_async(CALL, "COMMIT", conn.execute("COMMIT"))
            .await
            .unwrap_or_else(|e| Report::new("released the table lock").got(e).fail());
    });
    for w in waiting {
        match w.join().expect("the request thread") {
            Ok(200) => {}
            other => lab
                .report()
                .did("released the table lock the 3 GET /tasks waited on")
                .expected("200 for each")
                .got(format!("{other:?}"))
                .fail(),
        }
    }
    wait_until_scraped(
        &lab.server,
        "every connection back in the pool (in_use 0, idle at least 3) after the requests finished",
        "in_use is what the pool has handed out: derive it from size() - num_idle() at scrape time; (size, idle, in_use, in flight) above",
        || read("after the waiting requests finished"),
        |(_, idle, in_use, _)| in_use == 0.0 && idle >= 3.0,
    );
}

// Errors are counted with the status the client got, including extractor rejections (400, 413, 415, 422), 405, 412 and 404.
#[test]
fn test_25_errors_are_counted_with_the_status_the_client_got() {
    let lab = lab(&[]);
    let mut sent = Vec::new();
    let id = lab.create(&mut sent, "target");
    let p = format!("/tasks/{id}");
    lab.expect(
        &mut sent,
        "POST",
        "/tasks",
        "/tasks",
        &[],
        Some(r#"{"title": "x", "priority": 9}"#),
        422,
    );
    lab.expect(
        &mut sent,
        "POST",
        "/tasks",
        "/tasks",
        &[],
        Some("[1, 2]"),
        422,
    );
    lab.expect(
        &mut sent,
        "POST",
        "/tasks",
        "/tasks",
        &[],
        Some("{not json"),
        400,
    );
    lab.expect(
        &mut sent,
        "POST",
        "/tasks",
        "/tasks",
        &[("content-type", "text/plain")],
        Some(r#"{"title": "x"}"#),
        415,
    );
    let big = format!(r#"{{"title": "{}"}}"#, "x".repeat(65 * 1024));
    lab.expect(&mut sent, "POST", "/tasks", "/tasks", &[], Some(&big), 413);
    lab.expect(&mut sent, "GET", "/tasks?limit=0", "/tasks", &[], None, 422);
    lab.expect(
        &mut sent,
        "PATCH",
        &p,
        "/tasks/{id}",
        &[("if-match", "\"999\"")],
        Some(r#"{"done": true}"#),
        412,
    );
    lab.expect(
        &mut sent,
        "PUT",
        &p,
        "/tasks/{id}",
        &[],
        Some(r#"{"title": "y"}"#),
        422,
    );
    lab.expect(&mut sent, "DELETE", "/tasks", "/tasks", &[], None, 405);
    lab.expect(&mut sent, "POST", &p, "/tasks/{id}", &[], None, 405);
    let r = lab.expect(
        &mut sent,
        "PATCH",
        &p,
        "/tasks/{id}",
        &[],
        Some(r#"{"done": true}"#),
        200,
    );
    let etag = r.header("etag").unwrap_or("\"?\"").to_string();
    lab.expect(
        &mut sent,
        "DELETE",
        &p,
        "/tasks/{id}",
        &[("if-match", &etag)],
        None,
        204,
    );
    lab.expect(&mut sent, "DELETE", &p, "/tasks/{id}", &[], None, 404);
    lab.expect(&mut sent, "GET", "/", UNMATCHED, &[], None, 404);
    let s = lab.scrape("after a series of errors");
    lab.expect_counted(
        &s,
        &sent,
        "sent requests answered 201, 422 (bad priority, a JSON array, limit=0, PUT without every field), 400 (malformed JSON), 415, 413, 412, 405 (twice), 200, 204, 404 (twice), then scraped /metrics",
        "the status label is the status of the response the client got, whoever made it: your handlers, an extractor's rejection, the method router (405) or the fallback (404); measure it in a middleware around the whole router",
    );
}

// A request that times out on an unreachable database is counted as the 503 the client got, and timed.
#[test]
fn test_26_timeouts_are_counted_as_503() {
    let mut lab = lab_behind_proxy(&[("REQUEST_TIMEOUT_MS", "400")]);
    let mut sent = Vec::new();
    let id = lab.create(&mut sent, "before the fault");
    let proxy = lab.proxy.take().expect("a proxy");
    proxy.set(Fault::Blackhole);
    let p = format!("/tasks/{id}");
    lab.expect(&mut sent, "GET", &p, "/tasks/{id}", &[], None, 503);
    proxy.set(Fault::Pass);
    lab.proxy = Some(proxy);
    let s = lab.scrape("after a request that timed out");
    lab.expect_counted(
        &s,
        &sent,
        "with REQUEST_TIMEOUT_MS=400: sent POST /tasks (201), blackholed the database, sent GET /tasks/{id} (503), then scraped /metrics",
        "the timeout must sit inside the metrics middleware: a timeout layer outside it drops the request before it is counted",
    );
}

// Whether /metrics counts itself is one choice kept everywhere: absent from the counter, the histogram and the gauge, or present in all three.
#[test]
fn test_27_scrapes_count_themselves_consistently_or_not_at_all() {
    let lab = lab(&[]);
    let mut sent = Vec::new();
    lab.create(&mut sent, "one");
    let scrapes: Vec<Scrape> = (0..3)
        .map(|i| lab.scrape(&format!("scrape {} of 3", i + 1)))
        .collect();
    let seen: Vec<(f64, f64, i64)> = scrapes
        .iter()
        .map(|s| {
            (
                s.sum("http_requests_total", &[("route", "/metrics")]),
                s.sum(
                    "http_request_duration_seconds_count",
                    &[("route", "/metrics")],
                ),
                in_flight(&lab.report(), s),
            )
        })
        .collect();
    let not_counted = seen.iter().all(|&(c, h, g)| c == 0.0 && h == 0.0 && g == 0);
    // Counted: scrape k sees the k - 1 scrapes before it, and itself in flight.
    let counted = seen
        .iter()
        .enumerate()
        .all(|(k, &(c, h, g))| c == k as f64 && h == k as f64 && g == 1);
    if !(not_counted || counted) {
        lab.report()
            .did("scraped /metrics 3 times in a row on an otherwise idle server")
            .expected("either /metrics not counted at all (no route=\"/metrics\" in http_requests_total or the histogram, in-flight 0 during a scrape), or counted everywhere (scrape k sees k-1 earlier scrapes in the counter and histogram, and itself in flight: 1)")
            .got(format!(
                "(counter, histogram count, in flight) per scrape: {seen:?}"
            ))
            .hint("decide whether /metrics is counted, do it in one place (the middleware), and write the choice in your README")
            .fail();
    }
    lab.expect_counted(
        &scrapes[2],
        &sent,
        "sent one POST /tasks, then scraped /metrics 3 times",
        "the scrapes must not change the other counters",
    );
}
