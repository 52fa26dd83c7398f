//! The grader for lab 19, load_balancer.
//!
//! Every test starts its own upstreams inside the test process
//! (`labkit::upstream::Upstream`: each answers with its name in
//! `x-upstream`, records what reached it, counts health probes, and
//! misbehaves on demand) and a balancer in front of them on
//! `127.0.0.1:0`. Health changes have no event to wait for, so a test
//! waits until the balancer has probed after the change (the upstream
//! counts the probes), never for a fixed time.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use labkit::client::Client;
use labkit::http;
use labkit::server::Server;
use labkit::upstream::{Behaviour, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_load_balancer");

/// How long one request through the balancer may take: every upstream in
/// these tests answers at once unless told to hold.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// How long a test waits for the balancer to change its mind.
const DEADLINE: Duration = Duration::from_secs(5);

/// Short enough that waiting for two rounds of probes is quick.
const FAST_PROBES: &str = "100";

/// Long enough that no probe (after the first round at startup) happens
/// during a test: retries are then the only thing that keeps requests away
/// from a failing upstream.
const NO_PROBES: &str = "60000";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A balancer in front of `upstreams` (in that order), with `flags`.
fn balancer(upstreams: &[&Upstream], flags: &[&str]) -> Server {
    // The builder passes `127.0.0.1:0` as the first argument (ADDR).
    let server = Server::builder(BIN)
        .args(upstreams.iter().map(|u| u.url()))
        .args(flags)
        .spawn();
    // A balancer parked with a request unread fails an upstream's wait at once.
    for up in upstreams {
        up.watch(&server);
    }
    server
}

/// A blocking HTTP client with a short deadline per request.
fn client() -> reqwest::blocking::Client {
    http::client_builder()
        .timeout(REQUEST_DEADLINE)
        .build()
        .unwrap_or_else(|e| panic!("[test] could not build the HTTP client: {e}"))
}

/// What came back through the balancer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `x-upstream` header: which upstream answered ("" when none did).
    upstream: String,
    body: String,
}

/// Sends `method path` (with `body` when not empty) and returns the answer,
/// or an error message.
fn try_send(
    lb: &Server,
    c: &reqwest::blocking::Client,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Answer, String> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut request = c.request(m, http::url(lb, path));
    if !body.is_empty() {
        request = request.body(body.to_vec());
    }
    // On a helper thread, watched: a parked balancer fails at once.
    lb.watched(format!("sent {method} {path} to the balancer"), move || {
        let response = request
            .send()
            .map_err(|e| labkit::report::error_chain(&e))?;
        let status = response.status().as_u16();
        let upstream = response
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response
            .text()
            .map_err(|e| labkit::report::error_chain(&e))?;
        Ok(Answer {
            status,
            upstream,
            body,
        })
    })
}

/// [`try_send`], failing the test when no answer came.
#[track_caller]
fn send(
    lb: &Server,
    c: &reqwest::blocking::Client,
    method: &str,
    path: &str,
    body: &[u8],
) -> Answer {
    try_send(lb, c, method, path, body).unwrap_or_else(|e| {
        lb.report()
            .did(format!("sent {method} {path} to the balancer"))
            .expected(format!("an answer within {REQUEST_DEADLINE:?}"))
            .got(format!("no answer: {e}"))
            .hint("is every request answered, with the upstream's answer or a 502/503 of your own?")
            .fail()
    })
}

/// `GET path`, which must be answered 200 by one of the upstreams;
/// returns the upstream's name.
#[track_caller]
fn get_ok(lb: &Server, c: &reqwest::blocking::Client, path: &str, context: &str) -> String {
    let a = send(lb, c, "GET", path, b"");
    if a.status != 200 || a.upstream.is_empty() {
        lb.report()
            .did(context)
            .did(format!("sent GET {path}"))
            .expected("200 from one of the upstreams (with its x-upstream header)")
            .got(format!(
                "{} with x-upstream {:?} and body {:?}",
                a.status, a.upstream, a.body
            ))
            .hint("read the balancer's stderr below")
            .fail();
    }
    a.upstream
}

/// Waits, with a deadline, until `ready` holds: for facts that have no
/// event to wait on (the sum of two upstreams' counters).
#[track_caller]
fn eventually(lb: &Server, what: &str, ready: impl Fn() -> bool) {
    if labkit::wait::settle(DEADLINE, ready, |done| done).is_err() {
        lb.report()
            .expected(format!("{what} within {DEADLINE:?}"))
            .got("it did not happen")
            .hint("read the balancer's stderr below")
            .fail();
    }
}

/// Waits until the balancer has probed `up` at least twice since now: the
/// first probe may have been on its way before the change; the second
/// comes an interval after the first, whose answer (given after the
/// change) the balancer has seen by then. Probes are counted by the
/// upstream, so this waits for facts, not for time.
#[track_caller]
fn two_more_probes(up: &Upstream) {
    let before = up.probes();
    up.wait_for_probes(before + 2);
}

/// Waits until `live`, still running, has been probed three more times.
/// Used when another upstream was stopped and can no longer count probes:
/// the balancer probes every upstream every interval, so three more
/// probes at `live` take at least two intervals, and in that time the
/// stopped upstream has had at least one probe sent after it stopped,
/// refused at once (the third is one interval of slack for timers that do
/// not tick in step).
#[track_caller]
fn three_more_probes_at(live: &Upstream) {
    let before = live.probes();
    live.wait_for_probes(before + 3);
}

/// How many recorded requests at `up` carry `body`.
fn seen_body(up: &Upstream, body: &[u8]) -> usize {
    up.requests().iter().filter(|r| r.body == body).count()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// Proxies like lab 18: method, path and query, Host, headers and body go up
// unchanged; the upstream's status, headers and body come back.
#[test]
fn test_01_forwards_the_request_and_returns_the_upstreams_answer() {
    let a = Upstream::start("a");
    a.set_response(201, &[("x-reply", "from-a")], b"made it\n".to_vec());
    let lb = balancer(&[&a], &[]);

    let mut c = Client::connect_to(&lb);
    c.send(&http::request(
        "POST",
        "/orders/7?dry=1&x=%20y",
        &[
            ("Host", "shop.example"),
            ("X-Custom", "kept"),
            ("Content-Type", "text/plain"),
        ],
        b"two apples",
    ));
    let r = http::read_response(&mut c);
    lb.report()
        .did("sent POST /orders/7?dry=1&x=%20y (10-byte body) to the balancer in front of one upstream that answers 201")
        .expected("201, x-reply: from-a, body \"made it\\n\"")
        .got(r.describe())
        .hint("do you pass the upstream's status, headers and body back unchanged?")
        .check(r.status == 201 && r.header("x-reply") == Some("from-a") && r.body == b"made it\n");

    let seen = &a.wait_for_requests(1)[0];
    lb.report()
        .did("sent POST /orders/7?dry=1&x=%20y with Host: shop.example, X-Custom: kept and a 10-byte body")
        .expected("the upstream to get the same method, target, Host, X-Custom and body")
        .got(format!("{}\n  headers: {:?}\n  body: {:?}", seen.summary(), seen.headers, String::from_utf8_lossy(&seen.body)))
        .hint("forward the method, the path with its query (untouched), every end-to-end header and the body")
        .check(
            seen.method == "POST"
                && seen.target == "/orders/7?dry=1&x=%20y"
                && seen.header("host") == Some("shop.example")
                && seen.header("x-custom") == Some("kept")
                && seen.body == b"two apples",
        );
}

// Adds X-Forwarded-For (appending to an existing one) and X-Forwarded-Proto,
// and strips hop-by-hop headers in both directions.
#[test]
fn test_02_adds_forwarding_headers_and_strips_hop_by_hop_ones() {
    let a = Upstream::start("a");
    a.set_response(
        200,
        &[
            ("Connection", "x-up-hop"),
            ("X-Up-Hop", "1"),
            ("X-Up-Kept", "1"),
        ],
        b"ok".to_vec(),
    );
    let lb = balancer(&[&a], &[]);

    let mut c = Client::connect_to(&lb);
    c.send(&http::request(
        "GET",
        "/first",
        &[
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
        ],
        b"",
    ));
    let r = http::read_response(&mut c);
    lb.report()
        .did("sent GET /first to the balancer; the upstream answers with Connection: x-up-hop, X-Up-Hop: 1, X-Up-Kept: 1")
        .expected("200 with X-Up-Kept, without X-Up-Hop (named by the upstream's Connection header)")
        .got(r.describe())
        .hint("hop-by-hop headers, and those the Connection header names, end at the balancer: in responses too")
        .check(r.status == 200 && r.header("x-up-kept") == Some("1") && r.header("x-up-hop").is_none());
    c.send(&http::request(
        "GET",
        "/second",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    ));
    let r = http::read_response(&mut c);
    lb.report()
        .did("sent GET /second with X-Forwarded-For: 203.0.113.9 on the same connection")
        .expected("200")
        .got(r.describe())
        .check(r.status == 200);

    let seen = a.wait_for_requests(2);
    let (first, second) = (&seen[0], &seen[1]);
    lb.report()
        .did("sent GET /first with Connection: keep-alive, X-Hop, X-Hop: secret and Keep-Alive: timeout=5")
        .expected("the upstream to get X-Forwarded-For: 127.0.0.1 and X-Forwarded-Proto: http, and no X-Hop or Keep-Alive")
        .got(format!("{}\n  headers: {:?}", first.summary(), first.headers))
        .hint("add the client's IP (from the accepted socket's peer address); remove hop-by-hop headers and every header Connection names")
        .check(
            first.headers_named("x-forwarded-for") == ["127.0.0.1"]
                && first.header("x-forwarded-proto") == Some("http")
                && first.header("x-hop").is_none()
                && first.header("keep-alive").is_none(),
        );
    lb.report()
        .did("sent GET /second with X-Forwarded-For: 203.0.113.9")
        .expected("the upstream to get X-Forwarded-For: 203.0.113.9, 127.0.0.1 (one header)")
        .got(format!("{}\n  headers: {:?}", second.summary(), second.headers))
        .hint("append \", <client ip>\" to an existing X-Forwarded-For rather than adding a second one")
        .check(second.headers_named("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]);
}

// Round robin: nine requests in a row over a, b, c go to each in turn, in
// command-line order, three each.
#[test]
fn test_03_round_robin_sends_requests_in_turn_in_command_line_order() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &[]);
    let http = client();

    let order: Vec<String> = (0..9)
        .map(|i| get_ok(&lb, &http, &format!("/rr/{i}"), "round robin over a, b, c"))
        .collect();
    let names = ["a", "b", "c"];
    let start = names.iter().position(|n| *n == order[0]).unwrap_or(0);
    let expected: Vec<&str> = (0..9).map(|i| names[(start + i) % 3]).collect();
    lb.report()
        .did("started the balancer with upstreams a, b, c (round robin, the default)")
        .did("sent 9 GETs one after the other")
        .expected(format!("each upstream in turn, in command-line order, e.g. {expected:?} (3 each)"))
        .got(format!("{order:?}"))
        .hint("keep one counter shared by all connections (an AtomicUsize) and take the next upstream for every request")
        .check(order == expected);
    for up in [&a, &b, &c] {
        lb.report()
            .did("sent 9 GETs through the balancer")
            .expected(format!("upstream {} to record 3 of them", up.name()))
            .got(format!("{} recorded", up.requests().len()))
            .check(up.requests().len() == 3);
    }
}

// Least connections: with two requests stuck at a and none at b, new
// requests go to b. Round robin would send every other one to a.
#[test]
fn test_04_least_connections_avoids_the_upstream_with_requests_in_flight() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(&[&a, &b], &["--policy", "least-connections"]);
    let http = client();
    get_ok(&lb, &http, "/warm-up", "least-connections over a, b");

    // Four requests, each sent once the previous one is held: least
    // connections puts two at each upstream (as round robin would).
    a.set_behaviour(Behaviour::Hold);
    b.set_behaviour(Behaviour::Hold);
    let (done_tx, done_rx) = mpsc::channel();
    let mut held = Vec::new();
    for i in 1..=4 {
        let (lb_addr, http, done) = (lb.addr(), http.clone(), done_tx.clone());
        held.push(thread::spawn(move || {
            let url = format!("http://{lb_addr}/held/{i}");
            let result = http
                .get(url)
                .send()
                .map_err(|e| labkit::report::error_chain(&e))
                .map(|r| {
                    r.headers()
                        .get("x-upstream")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                });
            let _ = done.send(result);
        }));
        eventually(
            &lb,
            &format!("{i} request(s) held at the upstreams (a and b hold every request)"),
            || a.in_flight() + b.in_flight() >= i,
        );
    }
    a.wait_for_in_flight(2);
    b.wait_for_in_flight(2);

    // Let b's two go, and wait until they are back at the client: b has
    // nothing in flight any more, a still has two.
    a.set_behaviour(Behaviour::Normal);
    b.set_behaviour(Behaviour::Normal);
    b.release_all();
    for _ in 0..2 {
        match done_rx.recv_timeout(DEADLINE) {
            Ok(Ok(name)) if name == "b" => {}
            got => lb
                .report()
                .did("held 2 requests at a and 2 at b, then released b's")
                .expected("b's 2 answers to come back")
                .got(format!("{got:?}"))
                .hint("a held request must not block the others")
                .fail(),
        }
    }

    let order: Vec<String> = (0..6)
        .map(|i| {
            get_ok(
                &lb,
                &http,
                &format!("/next/{i}"),
                "least connections with 2 requests held at a",
            )
        })
        .collect();
    a.release_all();
    for h in held {
        let _ = h.join();
    }
    lb.report()
        .did("started the balancer with --policy least-connections over a, b")
        .did("held 2 requests at a and 2 at b, released b's and got their answers")
        .did("sent 6 GETs one after the other while a still had 2 in flight")
        .expected("all 6 to go to b (0 in flight) rather than a (2 in flight)")
        .got(format!("{order:?}"))
        .hint("count requests in flight per upstream (+1 when sent, -1 when the response body is done or dropped) and pick the smallest; is --policy read at all?")
        .check(order.iter().all(|n| n == "b"));
}

// Active health checks: an upstream whose health endpoint answers 503 is
// taken out; every request still succeeds, none reaches it.
#[test]
fn test_05_stops_sending_to_an_upstream_whose_health_check_fails() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &["--health-interval-ms", FAST_PROBES]);
    let http = client();
    for i in 0..3 {
        get_ok(&lb, &http, &format!("/before/{i}"), "a, b, c all healthy");
    }
    lb.report()
        .did("sent 3 GETs with a, b, c healthy")
        .expected("b to get one of them")
        .got(format!("b recorded {}", b.requests().len()))
        .check(!b.requests().is_empty());

    b.set_healthy(false);
    two_more_probes(&b);
    let before = b.requests().len();
    for i in 0..20 {
        let body = format!("order {i}");
        let r = send(&lb, &http, "POST", "/orders", body.as_bytes());
        lb.report()
            .did("b's GET /health answers 503; waited for 2 more probes of b")
            .did(format!("sent POST /orders {body:?}"))
            .expected("200 from a or c")
            .got(format!("{} from {:?}: {:?}", r.status, r.upstream, r.body))
            .hint("does a non-2xx probe answer mark the upstream unhealthy, and do you skip unhealthy upstreams?")
            .check(r.status == 200 && (r.upstream == "a" || r.upstream == "c"));
    }
    lb.report()
        .did("b's GET /health answers 503; waited for 2 more probes; sent 20 POSTs")
        .expected("none of them to reach b")
        .got(format!(
            "b recorded {} of them",
            b.requests().len() - before
        ))
        .check(b.requests().len() == before);
}

// An upstream that is down (connections refused) is found by the probes
// and taken out: POSTs, which are never retried, all succeed.
#[test]
fn test_06_stops_sending_to_an_upstream_that_is_down() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &["--health-interval-ms", FAST_PROBES]);
    let http = client();
    for i in 0..3 {
        get_ok(&lb, &http, &format!("/before/{i}"), "a, b, c all healthy");
    }

    b.stop();
    three_more_probes_at(&a);
    for i in 0..20 {
        let body = format!("order {i}");
        let r = send(&lb, &http, "POST", "/orders", body.as_bytes());
        lb.report()
            .did("stopped b (connections refused); waited for 3 more probes at a (so b was probed after it stopped)")
            .did(format!("sent POST /orders {body:?}"))
            .expected("200 from a or c")
            .got(format!("{} from {:?}: {:?}", r.status, r.upstream, r.body))
            .hint("does a probe that cannot connect mark the upstream unhealthy? (a POST is never retried, so a 502 here means it went to b)")
            .check(r.status == 200 && (r.upstream == "a" || r.upstream == "c"));
    }
}

// One good probe puts an upstream back: after its health endpoint recovers,
// or after it comes back up, it gets requests again.
#[test]
fn test_07_takes_an_upstream_back_once_it_is_healthy_again() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(&[&a, &b], &["--health-interval-ms", FAST_PROBES]);
    let http = client();

    // Unhealthy, then healthy again.
    b.set_healthy(false);
    two_more_probes(&b);
    for i in 0..4 {
        let name = get_ok(
            &lb,
            &http,
            &format!("/out/{i}"),
            "b's health check answers 503",
        );
        lb.report()
            .did("b's GET /health answers 503; waited for 2 more probes of b")
            .did(format!("sent GET /out/{i}"))
            .expected("a to answer")
            .got(format!("{name} answered"))
            .hint("does a non-2xx probe answer mark the upstream unhealthy?")
            .check(name == "a");
    }
    b.set_healthy(true);
    two_more_probes(&b);
    back_in_rotation(
        &lb,
        &http,
        &b,
        "b's GET /health answered 503, then 200 again",
    );

    // Down, then up again.
    b.stop();
    three_more_probes_at(&a);
    for i in 0..4 {
        let name = get_ok(&lb, &http, &format!("/down/{i}"), "b is stopped");
        lb.report()
            .did("stopped b; waited for 3 more probes at a")
            .did(format!("sent GET /down/{i}"))
            .expected("a to answer")
            .got(format!("{name} answered"))
            .check(name == "a");
    }
    b.restart();
    two_more_probes(&b);
    back_in_rotation(&lb, &http, &b, "stopped b, then restarted it");
}

/// Sends GETs until `up` gets one, with a deadline.
#[track_caller]
fn back_in_rotation(lb: &Server, http: &reqwest::blocking::Client, up: &Upstream, context: &str) {
    let before = up.requests().len();
    let until = Instant::now() + DEADLINE;
    let mut sent = 0;
    while up.requests().len() == before {
        if Instant::now() > until {
            lb.report()
                .did(context)
                .did(format!("waited for 2 more probes of {}, then sent {sent} GETs", up.name()))
                .expected(format!("{} to get requests again", up.name()))
                .got(format!("none reached {}", up.name()))
                .hint("one good probe (2xx) must put an upstream back: do you keep probing unhealthy upstreams, and set the flag back to healthy?")
                .fail();
        }
        get_ok(lb, http, &format!("/back/{sent}"), context);
        sent += 1;
    }
}

// Retry: a GET whose upstream refuses the connection is sent once more to
// another upstream, so the client never sees the failure.
#[test]
fn test_08_retries_a_get_on_another_upstream_when_one_refuses() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &["--health-interval-ms", NO_PROBES]);
    let http = client();
    for i in 0..3 {
        get_ok(&lb, &http, &format!("/before/{i}"), "a, b, c all up");
    }

    // The first round of probes (at startup) may or may not find b
    // stopped; either way every GET must succeed. Test 09 makes sure that
    // a retry really happens.
    b.stop();
    for i in 0..9 {
        let name = get_ok(
            &lb,
            &http,
            &format!("/after/{i}"),
            "stopped b (connections refused); probes every 60 s, so b still counts as healthy",
        );
        lb.report()
            .did(format!("stopped b, then sent GET /after/{i}"))
            .expected("a or c to answer")
            .got(format!("{name} answered"))
            .check(name == "a" || name == "c");
    }
}

// A GET that an upstream reads and then drops without answering is retried
// elsewhere; a POST is not (the upstream got it and may have acted on it):
// 502, and no other upstream ever sees it.
#[test]
fn test_09_retries_a_dropped_get_but_never_a_post() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &["--health-interval-ms", NO_PROBES]);
    let http = client();
    b.set_behaviour(Behaviour::Reset);

    for i in 0..6 {
        let name = get_ok(
            &lb,
            &http,
            &format!("/get/{i}"),
            "b reads every request and closes the connection without answering",
        );
        lb.report()
            .did(format!(
                "b drops every request unanswered; sent GET /get/{i}"
            ))
            .expected("a or c to answer (after a retry when b was chosen)")
            .got(format!("{name} answered"))
            .check(name == "a" || name == "c");
    }
    lb.report()
        .did("b drops every request unanswered; sent 6 GETs in a row over a, b, c")
        .expected("b to have been chosen (and so the GET retried) at least once")
        .got(format!("b recorded {}", b.requests().len()))
        .hint("round robin must still choose b: it is healthy (its health check answers 200)")
        .check(!b.requests().is_empty());

    // POSTs in a row until one is chosen for b.
    let mut answers = Vec::new();
    for i in 0..6 {
        let body = format!("payment {i}");
        let r = send(&lb, &http, "POST", "/pay", body.as_bytes());
        answers.push((body.clone(), r));
        if seen_body(&b, body.as_bytes()) > 0 {
            break;
        }
    }
    let Some((body, r)) = answers
        .iter()
        .find(|(body, _)| seen_body(&b, body.as_bytes()) > 0)
    else {
        lb.report()
            .did(format!(
                "sent {} POSTs in a row over a, b, c",
                answers.len()
            ))
            .expected("b to get one of them")
            .got(format!("{answers:?}"))
            .fail();
    };
    lb.report()
        .did(format!("b drops every request unanswered; sent POST /pay {body:?}, which b got"))
        .expected("502 Bad Gateway: a POST is not idempotent, so it is never retried")
        .got(format!("{} from {:?}: {:?}", r.status, r.upstream, r.body))
        .hint("retry only GET, HEAD, PUT, DELETE, OPTIONS and TRACE: b may have acted on the POST before it died")
        .check(r.status == 502);
    let elsewhere = seen_body(&a, body.as_bytes()) + seen_body(&c, body.as_bytes());
    lb.report()
        .did(format!(
            "b drops every request unanswered; sent POST /pay {body:?}, which b got"
        ))
        .expected("a and c never to see that POST")
        .got(format!("they got it {elsewhere} time(s)"))
        .hint("a POST that reached an upstream must not be sent to a second one")
        .check(elsewhere == 0);
    for (body, r) in &answers {
        if seen_body(&b, body.as_bytes()) == 0 {
            lb.report()
                .did(format!("sent POST /pay {body:?}, which b did not get"))
                .expected("200 from a or c")
                .got(format!("{} from {:?}", r.status, r.upstream))
                .check(r.status == 200);
        }
    }
}

// No healthy upstream: 503, and the balancer keeps running and serves
// again as soon as one comes back. Everything down: 502 or 503, no crash.
#[test]
fn test_10_answers_503_when_no_upstream_is_healthy_and_keeps_running() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(&[&a, &b], &["--health-interval-ms", FAST_PROBES]);
    let http = client();
    get_ok(&lb, &http, "/before", "a and b healthy");

    a.set_healthy(false);
    b.set_healthy(false);
    two_more_probes(&a);
    two_more_probes(&b);
    for (method, body) in [("GET", &b""[..]), ("POST", &b"data"[..])] {
        let r = send(&lb, &http, method, "/nobody", body);
        lb.report()
            .did("both health endpoints answer 503; waited for 2 more probes of each")
            .did(format!("sent {method} /nobody"))
            .expected("503 Service Unavailable from the balancer itself")
            .got(format!("{} from {:?}: {:?}", r.status, r.upstream, r.body))
            .hint("with no healthy upstream, answer 503 without forwarding")
            .check(r.status == 503 && r.upstream.is_empty());
    }
    lb.expect_alive("answered 503 with no healthy upstream");

    a.set_healthy(true);
    two_more_probes(&a);
    let name = get_ok(
        &lb,
        &http,
        "/again",
        "a's health endpoint answers 200 again",
    );
    lb.report()
        .did("a's health endpoint answers 200 again; waited for 2 more probes")
        .expected("a to answer")
        .got(format!("{name} answered"))
        .check(name == "a");

    a.stop();
    b.stop();
    let r = send(&lb, &http, "GET", "/all-down", b"");
    lb.report()
        .did("stopped both upstreams, sent GET /all-down")
        .expected("502 or 503 from the balancer")
        .got(format!("{} from {:?}: {:?}", r.status, r.upstream, r.body))
        .check(r.status == 502 || r.status == 503);
    lb.expect_alive("answered with every upstream down");
}

// A client that vanishes while its request is held at an upstream: the
// balancer survives and counts that request out at once (least
// connections then prefers the upstream it was at).
#[test]
fn test_11_counts_out_a_request_whose_client_vanished() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(
        &[&a, &b],
        &[
            "--policy",
            "least-connections",
            "--health-interval-ms",
            NO_PROBES,
        ],
    );
    let http = client();
    get_ok(&lb, &http, "/warm-up", "least-connections over a, b");

    // Four requests from four raw clients, each sent once the previous one
    // is held: two end up at a and two at b.
    a.set_behaviour(Behaviour::Hold);
    b.set_behaviour(Behaviour::Hold);
    let mut clients = Vec::new();
    for i in 1..=4 {
        let mut c = Client::connect_to(&lb);
        c.send(&http::request("GET", &format!("/held/{i}"), &[], b""));
        clients.push((format!("/held/{i}"), c));
        eventually(
            &lb,
            &format!("{i} request(s) held at the upstreams (a and b hold every request)"),
            || a.in_flight() + b.in_flight() >= i,
        );
    }
    a.wait_for_in_flight(2);
    b.wait_for_in_flight(2);
    a.set_behaviour(Behaviour::Normal);
    b.set_behaviour(Behaviour::Normal);

    // b's two clients vanish (RST) while their requests are still held.
    let at_b: Vec<String> = b.requests().iter().map(|r| r.target.clone()).collect();
    let mut kept = Vec::new();
    for (target, c) in clients {
        if at_b.contains(&target) {
            c.reset();
        } else {
            kept.push(c);
        }
    }

    // The balancer notices the resets on its own schedule: rounds of 4
    // GETs until one goes to b only (b: 0 in flight, a: 2).
    let until = Instant::now() + DEADLINE;
    loop {
        let last: Vec<String> = (0..4)
            .map(|i| {
                get_ok(
                    &lb,
                    &http,
                    &format!("/after/{i}"),
                    "b's two clients vanished",
                )
            })
            .collect();
        if last.iter().all(|n| n == "b") {
            break;
        }
        if Instant::now() > until {
            lb.report()
                .did("least-connections over a, b: held 2 requests at a and 2 at b")
                .did("b's 2 clients reset their connections before any answer")
                .did("sent rounds of 4 GETs for 5 s")
                .expected("a round where all 4 go to b (0 in flight) rather than a (2 in flight)")
                .got(format!("the last round went to {last:?}"))
                .hint("a request whose client vanished is over: does your in-flight counter go down when hyper drops the request's future (Drop), not only when a body ends?")
                .fail();
        }
    }
    a.release_all();
    b.release_all();
    for mut c in kept {
        let r = http::read_response(&mut c);
        lb.report()
            .did("released the 2 requests held at a")
            .expected("their clients to get 200")
            .got(r.describe())
            .check(r.status == 200);
    }
    lb.expect_alive("2 clients reset their connections mid-request");
}

/// Sends a GET on a new raw connection and leaves it open (its request is
/// to be held at an upstream); waits until `total` requests are in flight
/// at `ups` in all, and returns the client and the name of the upstream
/// whose count went up.
#[track_caller]
fn hold_one(lb: &Server, ups: &[&Upstream], target: &str, total: usize) -> (Client, String) {
    let before: Vec<usize> = ups.iter().map(|u| u.in_flight()).collect();
    let mut c = Client::connect_to(lb);
    c.send(&http::request("GET", target, &[], b""));
    eventually(
        lb,
        &format!("{total} request(s) held at the upstreams (every upstream holds every request)"),
        || ups.iter().map(|u| u.in_flight()).sum::<usize>() >= total,
    );
    let name = ups
        .iter()
        .zip(&before)
        .find(|(u, b)| u.in_flight() > **b)
        .map_or_else(|| "?".to_string(), |(u, _)| u.name().to_string());
    (c, name)
}

/// The upstream names of `n` GETs sent one after the other.
#[track_caller]
fn get_names(
    lb: &Server,
    http: &reqwest::blocking::Client,
    prefix: &str,
    n: usize,
    context: &str,
) -> Vec<String> {
    (0..n)
        .map(|i| get_ok(lb, http, &format!("{prefix}/{i}"), context))
        .collect()
}

/// Whether `order` is `names` in turn from some starting point.
fn in_turn(order: &[String], names: &[&str]) -> bool {
    let Some(start) = names.iter().position(|n| *n == order[0]) else {
        return false;
    };
    order
        .iter()
        .enumerate()
        .all(|(i, n)| n == names[(start + i) % names.len()])
}

// Least connections, exactly: requests held one after the other over a, b,
// c go a, b, c, a, b, c (fewest in flight, ties to the first in
// command-line order), and idle requests all go to a.
#[test]
fn test_12_least_connections_picks_the_fewest_in_flight_and_breaks_ties_in_order() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(
        &[&a, &b, &c],
        &[
            "--policy",
            "least-connections",
            "--health-interval-ms",
            NO_PROBES,
        ],
    );
    let http = client();
    let idle = get_names(
        &lb,
        &http,
        "/idle",
        3,
        "least-connections over a, b, c, nothing in flight",
    );
    lb.report()
        .did("started the balancer with --policy least-connections over a, b, c")
        .did("sent 3 GETs one after the other (each answered before the next: 0 in flight every time)")
        .expected("[\"a\", \"a\", \"a\"]: every upstream has 0 in flight, and ties go to the first in command-line order")
        .got(format!("{idle:?}"))
        .hint("among the upstreams with the fewest requests in flight, do you take the first in command-line order?")
        .check(idle.iter().all(|n| n == "a"));

    for up in [&a, &b, &c] {
        up.set_behaviour(Behaviour::Hold);
    }
    let ups = [&a, &b, &c];
    let mut held = Vec::new();
    let mut order = Vec::new();
    for i in 0..6 {
        let (client, name) = hold_one(&lb, &ups, &format!("/held/{i}"), i + 1);
        held.push(client);
        order.push(name);
    }
    lb.report()
        .did("least-connections over a, b, c, which hold every request")
        .did("sent 6 GETs, each once the previous one was held")
        .expected("[\"a\", \"b\", \"c\", \"a\", \"b\", \"c\"]: each to the upstream with the fewest in flight, ties to the first in command-line order")
        .got(format!("{order:?}"))
        .hint("count a request in when it is sent to an upstream, and pick the smallest count among the healthy upstreams, the first on a tie")
        .check(order == ["a", "b", "c", "a", "b", "c"]);
    for up in ups {
        up.set_behaviour(Behaviour::Normal);
        up.release_all();
    }
    for mut client in held {
        let r = http::read_response(&mut client);
        lb.report()
            .did("released the 6 held requests")
            .expected("200 for each")
            .got(r.describe())
            .check(r.status == 200);
    }
}

// A request is in flight until its response body has been passed on
// completely, not just its head: while a's body is still streaming,
// least connections sends new requests to b; once it ends, to a again.
#[test]
fn test_13_least_connections_counts_a_request_until_its_body_has_ended() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(
        &[&a, &b],
        &[
            "--policy",
            "least-connections",
            "--health-interval-ms",
            NO_PROBES,
        ],
    );
    let http = client();
    let gate = a.respond_in_two_parts(b"first part;".to_vec(), b"second part.".to_vec());
    let mut slow = Client::connect_to(&lb);
    slow.send(&http::request("GET", "/streaming", &[], b""));
    let did = "least-connections over a, b (nothing in flight, so a is first); sent GET /streaming, which a answers with a head and the first part of a body, holding the rest";
    let seen = slow.read_framed(
        "a response head and the first part of its body (\"first part;\")",
        "do you pass the upstream's head and body on as they arrive?",
        |got, _| {
            got.windows(11)
                .position(|w| w == b"first part;")
                .map(|i| i + 11)
        },
    );
    lb.report()
        .did(did)
        .expected("a's answer (x-upstream: a)")
        .got(String::from_utf8_lossy(&seen).into_owned())
        .hint("ties go to the first upstream in command-line order")
        .check(
            String::from_utf8_lossy(&seen)
                .to_ascii_lowercase()
                .contains("x-upstream: a"),
        );

    let during = get_names(
        &lb,
        &http,
        "/during",
        3,
        "a's response to GET /streaming is still streaming",
    );
    lb.report()
        .did(did)
        .did("got the head and the first part, then sent 3 GETs one after the other")
        .expected("all 3 to go to b: a's request is still in flight until its body ends")
        .got(format!("{during:?}"))
        .hint("a request is in flight until its response body has been passed on completely: does your counter go down when the head arrives? Move the guard into the response body")
        .check(during.iter().all(|n| n == "b"));

    gate.open();
    let rest = slow.read_framed(
        "the rest of the body and its end (\"second part.\", then the last chunk)",
        "is the end of the body passed on?",
        |got, closed| {
            let text = String::from_utf8_lossy(got);
            (text.contains("second part.") && (text.ends_with("0\r\n\r\n") || closed))
                .then_some(got.len())
        },
    );
    drop(rest);
    let after = get_names(
        &lb,
        &http,
        "/after",
        3,
        "a's response to GET /streaming has ended",
    );
    lb.report()
        .did(did)
        .did("let a send the rest of the body and read it to its end, then sent 3 GETs one after the other")
        .expected("all 3 to go to a: nothing is in flight anywhere, and ties go to the first")
        .got(format!("{after:?}"))
        .hint("is the request counted out once its body has been passed on completely?")
        .check(after.iter().all(|n| n == "a"));
}

// Round robin turns are over the healthy upstreams: with b out, a and c
// alternate (a, c, a, c), c does not take b's turns too; with b back,
// a, b, c in turn again.
#[test]
fn test_14_round_robin_alternates_over_the_healthy_upstreams_only() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &["--health-interval-ms", FAST_PROBES]);
    let http = client();
    b.set_healthy(false);
    two_more_probes(&b);
    let order = get_names(&lb, &http, "/two", 6, "b's health check answers 503");
    lb.report()
        .did("round robin over a, b, c; b's GET /health answers 503; waited for 2 more probes of b")
        .did("sent 6 GETs one after the other")
        .expected("a and c in turn, 3 each, e.g. [\"a\", \"c\", \"a\", \"c\", \"a\", \"c\"]")
        .got(format!("{order:?}"))
        .hint("take turns among the healthy upstreams only: skipping from b to the next healthy one gives c b's turns as well (a, c, c, a, c, c)")
        .check(in_turn(&order, &["a", "c"]));

    b.set_healthy(true);
    two_more_probes(&b);
    let order = get_names(
        &lb,
        &http,
        "/three",
        6,
        "b's health check answers 200 again",
    );
    lb.report()
        .did("b's GET /health answers 200 again; waited for 2 more probes of b")
        .did("sent 6 GETs one after the other")
        .expected("a, b, c in turn, in command-line order, 2 each")
        .got(format!("{order:?}"))
        .hint("a recovered upstream takes its turns again")
        .check(in_turn(&order, &["a", "b", "c"]));
}

// Round robin is one rotation for all clients: one request per new
// connection still goes a, b, c, a, b, c.
#[test]
fn test_15_round_robin_turns_are_shared_by_every_connection() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(&[&a, &b, &c], &["--health-interval-ms", NO_PROBES]);
    let mut order = Vec::new();
    for i in 0..6 {
        let mut conn = Client::connect_to(&lb);
        conn.send(&http::request("GET", &format!("/conn/{i}"), &[], b""));
        let r = http::read_response(&mut conn);
        lb.report()
            .did(format!("sent GET /conn/{i} on a new connection"))
            .expected("200 from one of the upstreams")
            .got(r.describe())
            .check(r.status == 200);
        order.push(r.header("x-upstream").unwrap_or("").to_string());
    }
    lb.report()
        .did("round robin over a, b, c: sent 6 GETs, each on a new connection")
        .expected("a, b, c in turn, 2 each")
        .got(format!("{order:?}"))
        .hint("is the round-robin cursor shared by every connection (in the state behind the Arc), or made anew per connection?")
        .check(in_turn(&order, &["a", "b", "c"]));
}

// A request whose upstream failed before answering (here: retried
// elsewhere) is counted out of that upstream: once it answers again, idle
// requests go to it first again.
#[test]
fn test_16_least_connections_counts_out_a_request_whose_upstream_failed() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(
        &[&a, &b],
        &[
            "--policy",
            "least-connections",
            "--health-interval-ms",
            NO_PROBES,
        ],
    );
    let http = client();
    a.set_behaviour(Behaviour::Reset);
    let name = get_ok(&lb, &http, "/retried", "a drops every request unanswered");
    lb.report()
        .did("least-connections over a, b; a reads every request and closes without answering; sent GET /retried")
        .expected("a to get it first (ties go to the first), then b to answer the retry")
        .got(format!("a recorded {}, {name} answered", a.requests().len()))
        .hint("ties go to the first upstream in command-line order; a GET whose upstream fails before a head is retried once elsewhere")
        .check(a.requests().len() == 1 && name == "b");
    a.set_behaviour(Behaviour::Normal);
    let after = get_names(&lb, &http, "/after", 3, "a answers again");
    lb.report()
        .did("least-connections over a, b; a dropped GET /retried (answered by b after a retry), then a answers normally again")
        .did("sent 3 GETs one after the other")
        .expected("all 3 to go to a: the failed attempt is over, so a has 0 in flight, and ties go to the first")
        .got(format!("{after:?}"))
        .hint("is the attempt that failed counted out of a (an RAII guard dropped on every path, errors included)?")
        .check(after.iter().all(|n| n == "a"));
}

// Least connections chooses among the healthy upstreams only: a, out of
// rotation, is never chosen, even though it has nothing in flight.
#[test]
fn test_17_least_connections_skips_an_unhealthy_upstream() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let lb = balancer(
        &[&a, &b, &c],
        &[
            "--policy",
            "least-connections",
            "--health-interval-ms",
            FAST_PROBES,
        ],
    );
    let http = client();
    a.set_healthy(false);
    two_more_probes(&a);
    let order = get_names(&lb, &http, "/lc", 4, "a's health check answers 503");
    lb.report()
        .did("least-connections over a, b, c; a's GET /health answers 503; waited for 2 more probes of a")
        .did("sent 4 GETs one after the other")
        .expected("all 4 to go to b: a is out, b and c have 0 in flight, and ties go to the first healthy one")
        .got(format!("{order:?}"))
        .hint("does least-connections skip unhealthy upstreams too, not only round robin?")
        .check(order.iter().all(|n| n == "b"));
}

// A Content-Length beyond what a 64-bit size can hold is the client's
// error (400), and an enormous one that fits is no reason to allocate: the
// balancer keeps serving.
#[test]
fn test_18_survives_absurd_content_lengths() {
    let a = Upstream::start("a");
    let lb = balancer(&[&a], &["--health-interval-ms", NO_PROBES]);
    let mut c = Client::connect_to(&lb);
    c.send(
        b"POST /huge HTTP/1.1\r\nHost: test\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
    );
    let r = http::read_response(&mut c);
    lb.report()
        .did("sent POST /huge with Content-Length: 99999999999999999999999 (more than 2^64)")
        .expected("400 Bad Request")
        .got(r.describe())
        .hint("a length that does not fit in a u64 is a malformed request: answer 400, never wrap or panic")
        .check(r.status == 400);

    let mut c = Client::connect_to(&lb);
    c.send(
        b"POST /enormous HTTP/1.1\r\nHost: test\r\nContent-Length: 4611686018427387904\r\n\r\nabc",
    );
    // Either the request reached a (streamed through), or the balancer
    // died trying to make room for it.
    eventually(
        &lb,
        "POST /enormous to reach upstream a (or the balancer to exit)",
        || a.in_flight() >= 1 || !lb.is_alive(),
    );
    c.reset();
    let http = client();
    let did = "sent POST /enormous with Content-Length: 4611686018427387904 (2^62) and 3 bytes of body, then reset the connection; then sent GET /after";
    lb.expect_alive(did);
    let name = get_ok(&lb, &http, "/after", did);
    lb.report()
        .did(did)
        .expected("a to answer")
        .got(format!("{name} answered"))
        .check(name == "a");
}

// An upstream that breaks its response off mid-body: the client's
// connection is closed without the body's end (never a truncated body that
// looks complete), the request is counted out, and the balancer serves on.
#[test]
fn test_19_an_upstream_failing_mid_body_is_passed_on_as_a_broken_response() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let lb = balancer(
        &[&a, &b],
        &[
            "--policy",
            "least-connections",
            "--health-interval-ms",
            NO_PROBES,
        ],
    );
    let http = client();
    let gate = a.respond_in_two_parts(b"first part;".to_vec(), b"second part.".to_vec());
    let mut c = Client::connect_to(&lb);
    c.send(&http::request("GET", "/broken", &[], b""));
    let seen = c.read_framed(
        "a response head and the first part of its body (\"first part;\")",
        "do you pass the upstream's head and body on as they arrive?",
        |got, _| {
            got.windows(11)
                .position(|w| w == b"first part;")
                .map(|i| i + 11)
        },
    );
    gate.fail();
    // Until the connection closes, or the body ends as if it were complete.
    let rest = c.read_framed(
        "the connection to close (the upstream broke its response off mid-body)",
        "once the upstream's body fails, is the client's connection closed?",
        |got, closed| (closed || got.ends_with(b"0\r\n\r\n")).then_some(got.len()),
    );
    let all = [seen, rest].concat();
    let text = String::from_utf8_lossy(&all).into_owned();
    lb.report()
        .did("least-connections over a, b; sent GET /broken; a sent a chunked head and \"first part;\", then closed its connection mid-body")
        .expected("the balancer to close the client's connection without ending the body (no last chunk `0`), so the client knows the body is cut short")
        .got(format!("after the head and \"first part;\": {:?}", text.split("first part;").nth(1).unwrap_or("")))
        .hint("an error while reading the upstream's body must become an error on the client's side (hyper closes the connection), never a clean end of the body: do you turn a body error into end-of-stream?")
        .check(!text.contains("second part.") && !text.ends_with("0\r\n\r\n"));
    lb.expect_alive("an upstream broke its response off mid-body");
    let after = get_names(
        &lb,
        &http,
        "/after",
        3,
        "a broke off its last response mid-body",
    );
    lb.report()
        .did("a broke off its answer to GET /broken mid-body; then sent 3 GETs one after the other")
        .expected("all 3 to go to a: the broken request is over (0 in flight everywhere), and ties go to the first")
        .got(format!("{after:?}"))
        .hint("is a request counted out when its response body fails, too?")
        .check(after.iter().all(|n| n == "a"));
}
