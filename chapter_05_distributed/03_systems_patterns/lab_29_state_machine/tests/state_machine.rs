//! Grader for lab 29: TCP's connection state machine.
//!
//! Every test drives a `Connection` through `handle(event, now)` only, with
//! a clock the test owns: `now` is an `Instant` the test moves forward by
//! exact amounts, so the TIME-WAIT timer is checked one nanosecond before
//! its deadline and at it, with no sleeping.
//!
//! The README's table is written out once more below (`rule`): tests 12
//! and 13 check every one of its 132 (state, event) pairs, legal and
//! illegal; tests 02 to 11 walk the handshake and teardown traces of
//! RFC 9293 step by step, so a failure names the step; test 17 plays
//! random event sequences against the table. Each call runs under
//! `catch_unwind`, so a panic is reported as "panicked" with the state
//! and event that caused it, not as a crashed test.

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use labkit::Report;
use labkit::wait::{panic_message, within};
use state_machine::{Action, Config, Connection, Event, IllegalTransition, State};

/// The MSL of most tests: 30 s, so 2*MSL is a minute of the test's clock.
const MSL: Duration = Duration::from_secs(30);
/// A deadline on each test body: the machine is pure computation, so only
/// an endless loop could reach it.
const BODY: Duration = Duration::from_secs(10);
const NS: Duration = Duration::from_nanos(1);

const STATES: [State; 11] = [
    State::Closed,
    State::Listen,
    State::SynSent,
    State::SynReceived,
    State::Established,
    State::FinWait1,
    State::FinWait2,
    State::CloseWait,
    State::Closing,
    State::LastAck,
    State::TimeWait,
];

const EVENTS: [Event; 12] = [
    Event::PassiveOpen,
    Event::ActiveOpen,
    Event::Send,
    Event::Close,
    Event::Abort,
    Event::Syn,
    Event::SynAck,
    Event::Ack,
    Event::Fin,
    Event::FinAck,
    Event::Rst,
    Event::Timeout,
];

// ---------------------------------------------------------------------------
// The table (the README's Spec), the grader's own copy.

/// The legal transitions: `Some((next, action))`, or `None` for an event
/// the state rejects. `passive` says whether SYN-RECEIVED was reached from
/// LISTEN (it matters only there). `Timeout` is listed as legal in
/// TIME-WAIT; it is legal only once the timer is due, which the callers
/// check.
fn rule(state: State, passive: bool, event: Event) -> Option<(State, Action)> {
    use Action as A;
    use Event as E;
    use State as S;
    Some(match (state, event) {
        (S::Closed, E::PassiveOpen) => (S::Listen, A::Nothing),
        (S::Closed, E::ActiveOpen) => (S::SynSent, A::Syn),

        (S::Listen, E::ActiveOpen | E::Send) => (S::SynSent, A::Syn),
        (S::Listen, E::Close | E::Abort) => (S::Closed, A::Nothing),
        (S::Listen, E::Syn) => (S::SynReceived, A::SynAck),

        (S::SynSent, E::Send) => (S::SynSent, A::Nothing),
        (S::SynSent, E::Close | E::Abort | E::Rst) => (S::Closed, A::Nothing),
        (S::SynSent, E::Syn) => (S::SynReceived, A::SynAck),
        (S::SynSent, E::SynAck) => (S::Established, A::Ack),

        (S::SynReceived, E::Send) => (S::SynReceived, A::Nothing),
        (S::SynReceived, E::Close) => (S::FinWait1, A::Fin),
        (S::SynReceived, E::Abort) => (S::Closed, A::Rst),
        (S::SynReceived, E::Ack | E::SynAck) => (S::Established, A::Nothing),
        (S::SynReceived, E::Rst) if passive => (S::Listen, A::Nothing),
        (S::SynReceived, E::Rst) => (S::Closed, A::Nothing),

        (S::Established, E::Send) => (S::Established, A::Nothing),
        (S::Established, E::Close) => (S::FinWait1, A::Fin),
        (S::Established, E::Abort) => (S::Closed, A::Rst),
        (S::Established, E::Fin) => (S::CloseWait, A::Ack),
        (S::Established, E::Rst) => (S::Closed, A::Nothing),

        (S::FinWait1, E::Abort) => (S::Closed, A::Rst),
        (S::FinWait1, E::Ack) => (S::FinWait2, A::Nothing),
        (S::FinWait1, E::Fin) => (S::Closing, A::Ack),
        (S::FinWait1, E::FinAck) => (S::TimeWait, A::Ack),
        (S::FinWait1, E::Rst) => (S::Closed, A::Nothing),

        (S::FinWait2, E::Abort) => (S::Closed, A::Rst),
        (S::FinWait2, E::Fin) => (S::TimeWait, A::Ack),
        (S::FinWait2, E::Rst) => (S::Closed, A::Nothing),

        (S::CloseWait, E::Send) => (S::CloseWait, A::Nothing),
        (S::CloseWait, E::Close) => (S::LastAck, A::Fin),
        (S::CloseWait, E::Abort) => (S::Closed, A::Rst),
        (S::CloseWait, E::Rst) => (S::Closed, A::Nothing),

        (S::Closing, E::Abort | E::Rst) => (S::Closed, A::Nothing),
        (S::Closing, E::Ack) => (S::TimeWait, A::Nothing),

        (S::LastAck, E::Abort | E::Rst | E::Ack) => (S::Closed, A::Nothing),

        (S::TimeWait, E::Abort | E::Rst | E::Timeout) => (S::Closed, A::Nothing),
        (S::TimeWait, E::Fin) => (S::TimeWait, A::Ack),

        _ => return None,
    })
}

/// How a test brings a new connection to each state: events from CLOSED,
/// every one of them legal. SYN-RECEIVED has two (`passive` picks).
fn path(state: State, passive: bool) -> &'static [Event] {
    use Event as E;
    match state {
        State::Closed => &[],
        State::Listen => &[E::PassiveOpen],
        State::SynSent => &[E::ActiveOpen],
        State::SynReceived if passive => &[E::PassiveOpen, E::Syn],
        State::SynReceived => &[E::ActiveOpen, E::Syn],
        State::Established => &[E::ActiveOpen, E::SynAck],
        State::FinWait1 => &[E::ActiveOpen, E::SynAck, E::Close],
        State::FinWait2 => &[E::ActiveOpen, E::SynAck, E::Close, E::Ack],
        State::CloseWait => &[E::ActiveOpen, E::SynAck, E::Fin],
        State::Closing => &[E::ActiveOpen, E::SynAck, E::Close, E::Fin],
        State::LastAck => &[E::ActiveOpen, E::SynAck, E::Fin, E::Close],
        State::TimeWait => &[E::ActiveOpen, E::SynAck, E::Close, E::Ack, E::Fin],
    }
}

/// The RFC's name of a state, for messages.
fn rfc(state: State) -> &'static str {
    match state {
        State::Closed => "CLOSED",
        State::Listen => "LISTEN",
        State::SynSent => "SYN-SENT",
        State::SynReceived => "SYN-RECEIVED",
        State::Established => "ESTABLISHED",
        State::FinWait1 => "FIN-WAIT-1",
        State::FinWait2 => "FIN-WAIT-2",
        State::CloseWait => "CLOSE-WAIT",
        State::Closing => "CLOSING",
        State::LastAck => "LAST-ACK",
        State::TimeWait => "TIME-WAIT",
    }
}

/// What a transition is about, for the hint of a failure on it.
fn why(state: State, passive: bool, event: Event) -> &'static str {
    use Event as E;
    use State as S;
    match (state, event) {
        (S::SynSent, E::Syn) => {
            "a SYN in SYN-SENT is a simultaneous open: both sides sent a SYN; answer with SYN,ACK and go to SYN-RECEIVED"
        }
        (S::SynReceived, E::SynAck) => {
            "in a simultaneous open the peer's SYN,ACK acknowledges our SYN (RFC 9293 Figure 8): ESTABLISHED, nothing to send"
        }
        (S::SynReceived, E::Rst) if passive => {
            "note 1 of the diagram: a SYN-RECEIVED reached from LISTEN goes back to LISTEN on a RST, so the listener keeps listening"
        }
        (S::SynReceived, E::Rst) => {
            "a SYN-RECEIVED reached from SYN-SENT (our own connect) goes to CLOSED on a RST: the connection was refused"
        }
        (S::FinWait1, E::Fin) => {
            "a FIN in FIN-WAIT-1 is a simultaneous close: both FINs crossed; ACK it and go to CLOSING"
        }
        (S::FinWait1, E::FinAck) => {
            "note 2 of the diagram: a FIN that also acknowledges our FIN goes straight to TIME-WAIT"
        }
        (S::CloseWait, E::Close) => "closing in CLOSE-WAIT sends our FIN and waits in LAST-ACK",
        (S::Listen, E::Close) => "CLOSE in LISTEN deletes the TCB: CLOSED, nothing to send",
        (_, E::Abort) => {
            "ABORT (3.10.5) sends a RST from SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1/2 and CLOSE-WAIT, nothing elsewhere; always CLOSED"
        }
        (_, E::Rst) => "a RST closes every synchronized state (3.10.7.4)",
        (S::TimeWait, E::Fin) => {
            "a FIN in TIME-WAIT is the peer's retransmission: ACK it again and restart the 2*MSL timer"
        }
        (_, E::Timeout) => "Timeout is legal only in TIME-WAIT, once now >= start + 2 * msl",
        (_, E::Send) => {
            "SEND is accepted in SYN-SENT, SYN-RECEIVED, ESTABLISHED and CLOSE-WAIT (and turns LISTEN active); after our CLOSE it is an error"
        }
        _ => "compare your match arm for this (state, event) with the README's table",
    }
}

// ---------------------------------------------------------------------------
// Calling the machine.

/// What one call of `handle` gave.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Action),
    Err(IllegalTransition),
    Panicked(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok(a) => write!(f, "Ok({a:?})"),
            Outcome::Err(e) => write!(
                f,
                "Err(IllegalTransition {{ state: {:?}, event: {:?} }})",
                e.state, e.event
            ),
            Outcome::Panicked(m) => write!(f, "a panic: {m}"),
        }
    }
}

fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

fn call(conn: &mut Connection, event: Event, now: Instant) -> Outcome {
    match catch(|| conn.handle(event, now)) {
        Ok(Ok(a)) => Outcome::Ok(a),
        Ok(Err(e)) => Outcome::Err(e),
        Err(m) => Outcome::Panicked(m),
    }
}

/// A connection, the test's clock, and the steps so far (for messages).
struct Driver {
    conn: Connection,
    /// The clock's first reading; messages show times as `t+...`.
    t0: Instant,
    now: Instant,
    steps: Vec<String>,
}

impl Driver {
    fn new(msl: Duration) -> Driver {
        let conn = match catch(|| Connection::new(Config { msl })) {
            Ok(c) => c,
            Err(m) => Report::new(format!("called Connection::new(Config {{ msl: {msl:?} }})"))
                .expected("a connection in CLOSED")
                .got(format!("a panic: {m}"))
                .hint("start with `new` and `state`")
                .fail(),
        };
        // A day ahead of the real clock, so that a test can also hand the
        // machine an instant *before* t0 (a clock that went backwards).
        let t0 = Instant::now() + Duration::from_secs(86_400);
        Driver {
            conn,
            t0,
            now: t0,
            steps: vec![format!("Connection::new(Config {{ msl: {msl:?} }})")],
        }
    }

    /// A new connection brought to `state` along `path(state, passive)`,
    /// each step checked against the table.
    fn at(state: State, passive: bool, msl: Duration) -> Driver {
        let mut d = Driver::new(msl);
        let mut s = State::Closed;
        for &e in path(state, passive) {
            let (next, action) = rule(s, passive, e).expect("the paths are legal");
            d.step(e, action, next);
            s = next;
        }
        d
    }

    fn state(&self) -> Result<State, String> {
        catch(|| self.conn.state())
    }

    fn deadline(&self) -> Result<Option<Instant>, String> {
        catch(|| self.conn.time_wait_deadline())
    }

    /// Moves the test's clock forward.
    fn wait(&mut self, by: Duration) {
        self.now += by;
    }

    /// Sets the test's clock to `t0 + at`.
    fn set(&mut self, at: Duration) {
        self.now = self.t0 + at;
    }

    /// An instant as the messages show it.
    fn show(&self, t: Instant) -> String {
        format!("t+{:?}", t.saturating_duration_since(self.t0))
    }

    fn report(&self) -> Report {
        let mut r = Report::new("drove a Connection (clock injected, MSL as configured):");
        for s in &self.steps {
            r = r.did(format!("  {s}"));
        }
        r
    }

    /// Calls `handle(event, now)`, records it, and returns what it gave and
    /// the state after.
    fn send(&mut self, event: Event) -> (Outcome, Result<State, String>) {
        let before = self.state();
        let got = call(&mut self.conn, event, self.now);
        let after = self.state();
        let show = |s: &Result<State, String>| match s {
            Ok(s) => rfc(*s).to_string(),
            Err(m) => format!("(state() panicked: {m})"),
        };
        self.steps.push(format!(
            "at {}, in {}: handle({event:?}, now) -> {got}, then in {}",
            self.show(self.now),
            show(&before),
            show(&after)
        ));
        (got, after)
    }

    /// One legal step: `event` must give `Ok(action)` and leave `next`.
    #[track_caller]
    fn step(&mut self, event: Event, action: Action, next: State) {
        let before = self.state().ok();
        let (got, after) = self.send(event);
        if got != Outcome::Ok(action) || after != Ok(next) {
            // `passive` only matters for SYN-RECEIVED + Rst, whose expected
            // next state says which kind it is.
            let hint = before
                .map(|b| why(b, next == State::Listen, event))
                .unwrap_or("state() must not panic");
            self.report()
                .expected(format!("Ok({action:?}), and then state() = {next:?}"))
                .got(format!("{got}, and then state() = {}", show_state(&after)))
                .hint(hint)
                .fail();
        }
    }

    /// One illegal step: `event` must be rejected, naming the state and
    /// the event, and change nothing (state and timer).
    #[track_caller]
    fn reject(&mut self, event: Event, hint: &str) {
        let before = self.state();
        let deadline = self.deadline();
        let (got, after) = self.send(event);
        let state = match &before {
            Ok(s) => *s,
            Err(m) => self
                .report()
                .expected("state() to answer")
                .got(format!("a panic: {m}"))
                .fail(),
        };
        let want = Outcome::Err(IllegalTransition { state, event });
        if got != want || after != before || self.deadline() != deadline {
            self.report()
                .expected(format!(
                    "{want}, and nothing changed: state() = {state:?}, time_wait_deadline() = {}",
                    self.show_deadline(&deadline)
                ))
                .got(format!(
                    "{got}, then state() = {}, time_wait_deadline() = {}",
                    show_state(&after),
                    self.show_deadline(&self.deadline())
                ))
                .hint(hint)
                .fail();
        }
    }

    /// A `time_wait_deadline()` answer as the messages show it.
    fn show_deadline(&self, d: &Result<Option<Instant>, String>) -> String {
        match d {
            Ok(None) => "None".to_string(),
            Ok(Some(t)) => format!("Some({})", self.show(*t)),
            Err(m) => format!("(a panic: {m})"),
        }
    }

    /// Checks `time_wait_deadline()`.
    #[track_caller]
    fn expect_deadline(&self, want: Option<Instant>, hint: &str) {
        let got = self.deadline();
        if got != Ok(want) {
            self.report()
                .did("called time_wait_deadline()")
                .expected(self.show_deadline(&Ok(want)))
                .got(self.show_deadline(&got))
                .hint(hint)
                .fail();
        }
    }
}

/// The first 20 lines of a list of mismatches, one per line.
fn listing(wrong: &[String]) -> String {
    let mut list = String::new();
    for w in wrong.iter().take(20) {
        let _ = write!(list, "\n  {w}");
    }
    if wrong.len() > 20 {
        let _ = write!(list, "\n  ... and {} more", wrong.len() - 20);
    }
    list
}

/// A `state()` answer as the messages show it.
fn show_state(s: &Result<State, String>) -> String {
    match s {
        Ok(s) => format!("{s:?}"),
        Err(m) => format!("(a panic: {m})"),
    }
}

fn body(what: &'static str, f: impl FnOnce() + Send + 'static) {
    within(BODY, what, f)
}

/// Every (state, event) pair the test's `rule` table covers, with the
/// path flavour: SYN-RECEIVED appears twice (from LISTEN and from SYN-SENT).
fn starts() -> Vec<(State, bool)> {
    let mut v = Vec::new();
    for s in STATES {
        v.push((s, true));
        if s == State::SynReceived {
            v.push((s, false));
        }
    }
    v
}

fn label(state: State, passive: bool) -> String {
    match state {
        State::SynReceived if passive => "SYN-RECEIVED (from LISTEN)".into(),
        State::SynReceived => "SYN-RECEIVED (from SYN-SENT)".into(),
        s => rfc(s).into(),
    }
}

// ---------------------------------------------------------------------------
// The tests.

// A new connection is CLOSED and has no timer: the start of every trace.
#[test]
fn test_01_a_new_connection_is_closed_with_no_timer() {
    body("test_01", || {
        let d = Driver::new(MSL);
        labkit::report::same(
            "called Connection::new(..).state()",
            Ok(State::Closed),
            d.state(),
            "a new connection has no TCB yet: CLOSED",
        );
        d.expect_deadline(None, "only TIME-WAIT has a deadline");
        labkit::report::same(
            "read Config::default().msl",
            Duration::from_secs(120),
            Config::default().msl,
            "RFC 9293 takes MSL to be 2 minutes",
        );
    });
}

// The three-way handshake, client and server side: the trace every
// connect() and accept() walks (ss shows SYN-SENT, then ESTAB).
#[test]
fn test_02_the_three_way_handshake_from_both_sides() {
    body("test_02", || {
        let mut client = Driver::new(MSL);
        client.step(Event::ActiveOpen, Action::Syn, State::SynSent);
        client.step(Event::SynAck, Action::Ack, State::Established);

        let mut server = Driver::new(MSL);
        server.step(Event::PassiveOpen, Action::Nothing, State::Listen);
        server.step(Event::Syn, Action::SynAck, State::SynReceived);
        server.step(Event::Ack, Action::Nothing, State::Established);
        // Both sides can send now.
        client.step(Event::Send, Action::Nothing, State::Established);
        server.step(Event::Send, Action::Nothing, State::Established);
    });
}

// A listener told to connect becomes active (the diagram's LISTEN -> SYN-SENT
// arrow, by SEND or by an active OPEN), and its SYN-RECEIVED is then an
// active one.
#[test]
fn test_03_a_listener_that_connects_goes_to_syn_sent() {
    body("test_03", || {
        for e in [Event::Send, Event::ActiveOpen] {
            let mut d = Driver::new(MSL);
            d.step(Event::PassiveOpen, Action::Nothing, State::Listen);
            d.step(e, Action::Syn, State::SynSent);
            d.step(Event::SynAck, Action::Ack, State::Established);
        }
        // Listener -> SYN-SENT -> simultaneous open: a RST now refuses our
        // connect (CLOSED), it does not return to LISTEN.
        let mut d = Driver::new(MSL);
        d.step(Event::PassiveOpen, Action::Nothing, State::Listen);
        d.step(Event::Send, Action::Syn, State::SynSent);
        d.step(Event::Syn, Action::SynAck, State::SynReceived);
        d.step(Event::Rst, Action::Nothing, State::Closed);
    });
}

// Simultaneous open (RFC 9293 Figure 8): both sides send a SYN, each sees
// the other's SYN in SYN-SENT, answers SYN,ACK, and the crossing SYN,ACKs
// (or a plain ACK) complete it.
#[test]
fn test_04_simultaneous_open_follows_figure_8() {
    body("test_04", || {
        for last in [Event::SynAck, Event::Ack] {
            let mut a = Driver::new(MSL);
            let mut b = Driver::new(MSL);
            a.step(Event::ActiveOpen, Action::Syn, State::SynSent);
            b.step(Event::ActiveOpen, Action::Syn, State::SynSent);
            a.step(Event::Syn, Action::SynAck, State::SynReceived);
            b.step(Event::Syn, Action::SynAck, State::SynReceived);
            a.step(last, Action::Nothing, State::Established);
            b.step(last, Action::Nothing, State::Established);
        }
    });
}

// The ordinary teardown: the side that closes first walks FIN-WAIT-1,
// FIN-WAIT-2, TIME-WAIT and waits 2*MSL; the other walks CLOSE-WAIT and
// LAST-ACK (what `ss -tan` shows in the README's walk).
#[test]
fn test_05_active_and_passive_close_traces() {
    body("test_05", || {
        let mut client = Driver::at(State::Established, true, MSL);
        let mut server = Driver::new(MSL);
        server.step(Event::PassiveOpen, Action::Nothing, State::Listen);
        server.step(Event::Syn, Action::SynAck, State::SynReceived);
        server.step(Event::Ack, Action::Nothing, State::Established);

        client.step(Event::Close, Action::Fin, State::FinWait1);
        server.step(Event::Fin, Action::Ack, State::CloseWait);
        client.step(Event::Ack, Action::Nothing, State::FinWait2);
        // The half-closed server may still send.
        server.step(Event::Send, Action::Nothing, State::CloseWait);
        server.step(Event::Close, Action::Fin, State::LastAck);
        client.wait(Duration::from_secs(3));
        client.step(Event::Fin, Action::Ack, State::TimeWait);
        server.step(Event::Ack, Action::Nothing, State::Closed);
        client.wait(2 * MSL);
        client.step(Event::Timeout, Action::Nothing, State::Closed);
        client.expect_deadline(None, "CLOSED has no timer");
        server.expect_deadline(
            None,
            "LAST-ACK -> CLOSED never waits: only the side that closed first does TIME-WAIT",
        );
    });
}

// Simultaneous close: both FINs cross, each side sees a FIN in FIN-WAIT-1,
// goes to CLOSING, and to TIME-WAIT on the ACK; both sides then wait 2*MSL.
#[test]
fn test_06_simultaneous_close_goes_through_closing() {
    body("test_06", || {
        let mut a = Driver::at(State::Established, true, MSL);
        let mut b = Driver::at(State::Established, true, MSL);
        a.step(Event::Close, Action::Fin, State::FinWait1);
        b.step(Event::Close, Action::Fin, State::FinWait1);
        a.step(Event::Fin, Action::Ack, State::Closing);
        b.step(Event::Fin, Action::Ack, State::Closing);
        a.wait(Duration::from_secs(1));
        a.step(Event::Ack, Action::Nothing, State::TimeWait);
        b.step(Event::Ack, Action::Nothing, State::TimeWait);
        let t = a.now;
        a.expect_deadline(
            Some(t + 2 * MSL),
            "the 2*MSL timer starts when CLOSING's ACK arrives",
        );
        a.set(Duration::from_secs(1) + 2 * MSL);
        a.step(Event::Timeout, Action::Nothing, State::Closed);
    });
}

// Note 2 of the diagram: in FIN-WAIT-1, a FIN that also acknowledges our FIN
// goes straight to TIME-WAIT (with an ACK), not to FIN-WAIT-2 or CLOSING.
#[test]
fn test_07_a_fin_that_acks_our_fin_goes_straight_to_time_wait() {
    body("test_07", || {
        let mut d = Driver::at(State::FinWait1, true, MSL);
        d.wait(Duration::from_secs(5));
        d.step(Event::FinAck, Action::Ack, State::TimeWait);
        let t = d.now;
        d.expect_deadline(
            Some(t + 2 * MSL),
            "TIME-WAIT lasts 2*MSL from the moment it is entered",
        );
        // And only FIN-WAIT-1 knows FinAck: elsewhere it is rejected.
        let mut e = Driver::at(State::Established, true, MSL);
        e.reject(
            Event::FinAck,
            "we sent no FIN in ESTABLISHED, so no FIN can acknowledge one",
        );
    });
}

// CLOSE in every state, the RFC's way (3.10.4): LISTEN and SYN-SENT just
// delete the TCB, ESTABLISHED/SYN-RECEIVED send FIN, CLOSE-WAIT sends FIN and
// waits in LAST-ACK, and a second CLOSE is an error ("connection closing").
#[test]
fn test_08_close_in_every_state() {
    body("test_08", || check_event_everywhere(Event::Close));
}

// ABORT in every state (3.10.5): always CLOSED, with a RST only where the
// peer still expects something from us.
#[test]
fn test_09_abort_in_every_state() {
    body("test_09", || check_event_everywhere(Event::Abort));
}

/// One event from every state, legal or not, as the table says.
fn check_event_everywhere(event: Event) {
    for (s, passive) in starts() {
        let mut d = Driver::at(s, passive, MSL);
        match rule(s, passive, event) {
            Some((next, action)) => d.step(event, action, next),
            None => d.reject(event, why(s, passive, event)),
        }
    }
}

// A RST in SYN-RECEIVED: back to LISTEN when it came from LISTEN (note 1),
// CLOSED when it came from our own SYN; the flag must not outlive the
// attempt it belongs to.
#[test]
fn test_10_rst_in_syn_received_returns_a_listener_to_listen() {
    body("test_10", || {
        let mut d = Driver::at(State::SynReceived, true, MSL);
        d.step(Event::Rst, Action::Nothing, State::Listen);
        // Still a working listener.
        d.step(Event::Syn, Action::SynAck, State::SynReceived);
        d.step(Event::Ack, Action::Nothing, State::Established);

        let mut d = Driver::at(State::SynReceived, false, MSL);
        d.step(Event::Rst, Action::Nothing, State::Closed);

        // The same connection: first passive, then (after CLOSE) active.
        let mut d = Driver::new(MSL);
        d.step(Event::PassiveOpen, Action::Nothing, State::Listen);
        d.step(Event::Syn, Action::SynAck, State::SynReceived);
        d.step(Event::Rst, Action::Nothing, State::Listen);
        d.step(Event::Close, Action::Nothing, State::Closed);
        d.step(Event::ActiveOpen, Action::Syn, State::SynSent);
        d.step(Event::Syn, Action::SynAck, State::SynReceived);
        d.step(Event::Rst, Action::Nothing, State::Closed);
        // And the other way round.
        d.step(Event::PassiveOpen, Action::Nothing, State::Listen);
        d.step(Event::Syn, Action::SynAck, State::SynReceived);
        d.step(Event::Rst, Action::Nothing, State::Listen);
    });
}

// A RST to our SYN is a refused connect (ECONNREFUSED); in every
// synchronized state it closes the connection (ECONNRESET), TIME-WAIT
// included; in LISTEN and CLOSED there is nothing to reset.
#[test]
fn test_11_rst_refuses_a_connect_and_resets_every_synchronized_state() {
    body("test_11", || {
        check_event_everywhere(Event::Rst);
        let d = {
            let mut d = Driver::at(State::TimeWait, true, MSL);
            d.step(Event::Rst, Action::Nothing, State::Closed);
            d
        };
        d.expect_deadline(None, "a RST ends TIME-WAIT: no timer is left behind");
    });
}

// Every legal transition of the table (46 pairs, SYN-RECEIVED from both
// sides): the next state and the segment to send.
#[test]
fn test_12_every_legal_transition_of_the_table() {
    body("test_12", || {
        let mut wrong = Vec::new();
        let mut n = 0;
        for (s, passive) in starts() {
            for e in EVENTS {
                let Some((next, action)) = rule(s, passive, e) else {
                    continue;
                };
                n += 1;
                let mut d = Driver::at(s, passive, MSL);
                if e == Event::Timeout {
                    d.wait(2 * MSL);
                }
                let (got, after) = d.send(e);
                if let Outcome::Panicked(m) = &got {
                    d.report()
                        .expected(format!("Ok({action:?}), then {next:?}"))
                        .got(format!("a panic: {m}"))
                        .hint("handle must never panic: every event from the network is an input, not a bug")
                        .fail();
                }
                if got != Outcome::Ok(action) || after != Ok(next) {
                    wrong.push(format!(
                        "{} + {e:?}: expected Ok({action:?}) -> {}, got {got} -> {}\n          ({})",
                        label(s, passive),
                        rfc(next),
                        after.map(rfc).unwrap_or("(state() panicked)"),
                        why(s, passive, e)
                    ));
                }
            }
        }
        if !wrong.is_empty() {
            let list = listing(&wrong);
            Report::new(format!(
                "brought a new connection to each state (the paths of the README) and fed each of the {n} legal events"
            ))
            .expected("every one to give the table's action and next state")
            .got(format!("{} wrong:{list}", wrong.len()))
            .hint("the README's table is the spec; each line above names the rule")
            .fail();
        }
    });
}

// Every illegal (state, event) pair (86 of them, Timeout outside TIME-WAIT
// included) is rejected with `IllegalTransition { state, event }`, never a
// panic and never a silent Ok, and leaves state and timer exactly as they
// were; the machine then still works.
#[test]
fn test_13_every_illegal_event_is_rejected_with_a_typed_error() {
    body("test_13", || {
        // The error is a real error type: `?` works on it, and it prints.
        fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
        is_error::<IllegalTransition>();
        let mut wrong = Vec::new();
        let mut n = 0;
        for (s, passive) in starts() {
            for e in EVENTS {
                if rule(s, passive, e).is_some() {
                    continue;
                }
                n += 1;
                let mut d = Driver::at(s, passive, MSL);
                let deadline = d.deadline();
                let (got, after) = d.send(e);
                if let Outcome::Panicked(m) = &got {
                    d.report()
                        .expected(format!("Err(IllegalTransition {{ state: {s:?}, event: {e:?} }})"))
                        .got(format!("a panic: {m}"))
                        .hint("an illegal event is an input to reject: return Err, never panic (no unreachable!, no unwrap)")
                        .fail();
                }
                let want = Outcome::Err(IllegalTransition { state: s, event: e });
                let deadline_after = d.deadline();
                if got != want || after != Ok(s) || deadline_after != deadline {
                    wrong.push(format!(
                        "{} + {e:?}: expected {want}, unchanged; got {got}, then {}{}",
                        label(s, passive),
                        after.map(rfc).unwrap_or("(state() panicked)"),
                        if deadline_after != deadline {
                            ", and the TIME-WAIT deadline changed"
                        } else {
                            ""
                        }
                    ));
                    continue;
                }
                // Still usable: the rest of the way to CLOSED works.
                if let Some(msg) = finish(&mut d, s, passive) {
                    wrong.push(format!(
                        "{} + {e:?}: rejected correctly, but afterwards {msg}",
                        label(s, passive)
                    ));
                }
            }
        }
        if !wrong.is_empty() {
            let list = listing(&wrong);
            Report::new(format!(
                "brought a new connection to each state and fed each of the {n} events the table does not allow"
            ))
            .expected("each to be Err(IllegalTransition { state, event }) naming that state and event, with state() and time_wait_deadline() unchanged")
            .got(format!("{} wrong:{list}", wrong.len()))
            .hint("a catch-all arm that returns Ok (or changes state) turns a peer's nonsense into a transition; return Err and leave self alone")
            .fail();
        }
    });
}

/// After a rejected event in `state`, drives the connection on to CLOSED
/// by legal events; `Some(what went wrong)` if it does not get there.
fn finish(d: &mut Driver, state: State, passive: bool) -> Option<String> {
    use Event as E;
    let rest: &[Event] = match state {
        State::Closed => &[E::PassiveOpen, E::Close],
        State::Listen => &[E::Syn, E::Rst, E::Close],
        State::SynSent => &[E::SynAck, E::Abort],
        State::SynReceived => &[E::Ack, E::Close, E::Ack, E::Fin, E::Timeout],
        State::Established => &[E::Fin, E::Close, E::Ack],
        State::FinWait1 => &[E::Ack, E::Fin, E::Timeout],
        State::FinWait2 => &[E::Fin, E::Timeout],
        State::CloseWait => &[E::Close, E::Ack],
        State::Closing => &[E::Ack, E::Timeout],
        State::LastAck => &[E::Ack],
        State::TimeWait => &[E::Timeout],
    };
    let mut s = state;
    for &e in rest {
        if e == E::Timeout {
            d.wait(2 * MSL);
        }
        let (next, action) = rule(s, passive, e).expect("the finishing paths are legal");
        let (got, after) = d.send(e);
        if got != Outcome::Ok(action) || after != Ok(next) {
            return Some(format!(
                "in {} handle({e:?}) gave {got} and state {after:?}, where the table says Ok({action:?}) -> {}",
                rfc(s),
                rfc(next)
            ));
        }
        s = next;
    }
    None
}

// TIME-WAIT lasts exactly 2*MSL from the moment it is entered, on the
// injected clock: a Timeout one nanosecond early is rejected (and changes
// nothing), one at the deadline closes. For several MSLs, and for all three
// ways into TIME-WAIT.
#[test]
fn test_14_time_wait_lasts_exactly_two_msl() {
    body("test_14", || {
        let msls = [
            Duration::from_millis(1),
            Duration::from_secs(30),
            Duration::from_secs(120),
            Duration::from_nanos(1_500_000_001),
        ];
        for msl in msls {
            for via in [Event::Fin, Event::FinAck, Event::Ack] {
                let mut d = Driver::new(msl);
                d.step(Event::ActiveOpen, Action::Syn, State::SynSent);
                d.wait(Duration::from_millis(7));
                d.step(Event::SynAck, Action::Ack, State::Established);
                d.wait(Duration::from_secs(10));
                d.step(Event::Close, Action::Fin, State::FinWait1);
                d.wait(Duration::from_secs(2));
                match via {
                    Event::Fin => d.step(Event::Ack, Action::Nothing, State::FinWait2),
                    Event::Ack => d.step(Event::Fin, Action::Ack, State::Closing),
                    _ => {}
                }
                d.wait(Duration::from_millis(333));
                let action = if via == Event::Ack {
                    Action::Nothing
                } else {
                    Action::Ack
                };
                d.step(via, action, State::TimeWait);
                let entered = d.now;
                let deadline = entered + 2 * msl;
                d.expect_deadline(
                    Some(deadline),
                    "the timer starts when TIME-WAIT is entered (not at CLOSE or at FIN-WAIT-1) and lasts 2 * msl",
                );
                let early = "TIME-WAIT ends once now >= start + 2 * msl: not at MSL, not a nanosecond early";
                d.now = entered + msl;
                d.reject(Event::Timeout, early);
                d.now = deadline - NS;
                d.reject(Event::Timeout, early);
                d.expect_deadline(Some(deadline), "a rejected Timeout must not move the timer");
                d.now = deadline;
                d.step(Event::Timeout, Action::Nothing, State::Closed);
                d.expect_deadline(None, "CLOSED has no timer");
            }
        }
    });
}

// A FIN in TIME-WAIT is the peer's retransmission (our last ACK was lost):
// ACK it again and restart the 2*MSL timer from that moment, every time.
#[test]
fn test_15_a_retransmitted_fin_restarts_the_time_wait_timer() {
    body("test_15", || {
        let mut d = Driver::at(State::TimeWait, true, MSL);
        let entered = d.now;
        d.expect_deadline(Some(entered + 2 * MSL), "TIME-WAIT lasts 2*MSL");
        d.now = entered + MSL;
        d.step(Event::Fin, Action::Ack, State::TimeWait);
        let restarted = d.now;
        d.expect_deadline(
            Some(restarted + 2 * MSL),
            "a FIN in TIME-WAIT restarts the 2*MSL timer from now",
        );
        let hint = "after a retransmitted FIN, TIME-WAIT lasts 2*MSL from that FIN";
        d.now = entered + 2 * MSL;
        d.reject(Event::Timeout, hint);
        d.now = restarted + 2 * MSL - NS;
        d.reject(Event::Timeout, hint);
        // Again, right before it would have expired.
        d.step(Event::Fin, Action::Ack, State::TimeWait);
        let again = d.now;
        d.now = restarted + 2 * MSL;
        d.reject(Event::Timeout, hint);
        d.now = again + 2 * MSL;
        d.step(Event::Timeout, Action::Nothing, State::Closed);
    });
}

// Every way to CLOSED leaves a connection that opens again, passively or
// actively, like a socket slot being reused.
#[test]
fn test_16_a_closed_connection_opens_again() {
    body("test_16", || {
        use Event as E;
        let ways: [(State, &[Event]); 6] = [
            (State::TimeWait, &[E::Timeout]),
            (State::LastAck, &[E::Ack]),
            (State::Established, &[E::Rst]),
            (State::Established, &[E::Abort]),
            (State::Listen, &[E::Close]),
            (State::SynSent, &[E::Rst]),
        ];
        for (from, events) in ways {
            for open in [E::PassiveOpen, E::ActiveOpen] {
                let mut d = Driver::at(from, true, MSL);
                let mut s = from;
                for &e in events {
                    if e == E::Timeout {
                        d.wait(2 * MSL);
                    }
                    let (next, action) = rule(s, true, e).expect("legal");
                    d.step(e, action, next);
                    s = next;
                }
                d.expect_deadline(None, "CLOSED has no timer");
                let (next, action) = rule(State::Closed, true, open).expect("legal");
                d.step(open, action, next);
                if open == E::ActiveOpen {
                    d.step(E::Syn, Action::SynAck, State::SynReceived);
                    d.step(E::Rst, Action::Nothing, State::Closed);
                } else {
                    d.step(E::Syn, Action::SynAck, State::SynReceived);
                    d.step(E::Rst, Action::Nothing, State::Listen);
                }
            }
        }
    });
}

/// The grader's model of one connection: the table plus the timer.
#[derive(Debug, Clone, Copy)]
struct Model {
    state: State,
    passive: bool,
    since: Option<Instant>,
}

impl Model {
    fn due(&self, now: Instant, msl: Duration) -> bool {
        self.since.is_some_and(|t| now >= t + 2 * msl)
    }

    /// The expected outcome of `event` at `now`, applied to the model.
    fn apply(&mut self, event: Event, now: Instant, msl: Duration) -> Outcome {
        let legal = rule(self.state, self.passive, event)
            .filter(|_| event != Event::Timeout || self.due(now, msl));
        let Some((next, action)) = legal else {
            return Outcome::Err(IllegalTransition {
                state: self.state,
                event,
            });
        };
        if next == State::SynReceived && self.state != State::SynReceived {
            self.passive = self.state == State::Listen;
        }
        self.since = match next {
            State::TimeWait if event != Event::Timeout => Some(now),
            State::TimeWait => self.since,
            _ => None,
        };
        self.state = next;
        Outcome::Ok(action)
    }
}

// Random sequences of all twelve events, with the clock moving by random
// amounts (sometimes exactly to the deadline), agree with the table at every
// step and never panic: the states reached by unusual paths behave too.
#[test]
fn test_17_random_event_sequences_agree_with_the_table() {
    body("test_17", || {
        let msl = Duration::from_secs(10);
        // xorshift64: a fixed seed, so a failure repeats.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for walk in 0..400 {
            let mut d = Driver::new(msl);
            let mut m = Model {
                state: State::Closed,
                passive: false,
                since: None,
            };
            for _ in 0..40 {
                // The clock: mostly small steps, sometimes to the deadline
                // or a nanosecond before it.
                // (Never backwards: a monotonic clock.)
                match (rnd(10), m.since) {
                    (0, Some(t)) => d.now = d.now.max(t + 2 * msl),
                    (1, Some(t)) => d.now = d.now.max(t + 2 * msl - NS),
                    (2 | 3, _) => d.wait(Duration::from_millis(rnd(25_000))),
                    _ => {}
                }
                // Past the deadline the machine is asked to expire (the
                // spec does not say what other events do in a TIME-WAIT
                // whose timer the caller has not delivered yet).
                // Half the time a legal event, so that the walk gets far
                // from CLOSED; else any of the twelve.
                let legal: Vec<Event> = EVENTS
                    .into_iter()
                    .filter(|&e| rule(m.state, m.passive, e).is_some() && e != Event::Timeout)
                    .collect();
                let e = if m.due(d.now, msl) {
                    Event::Timeout
                } else if rnd(2) == 0 && !legal.is_empty() {
                    legal[rnd(legal.len() as u64) as usize]
                } else {
                    EVENTS[rnd(EVENTS.len() as u64) as usize]
                };
                let before = m.state;
                let want = m.apply(e, d.now, msl);
                let (got, after) = d.send(e);
                let deadline = d.deadline();
                let want_deadline = m.since.map(|t| t + 2 * msl);
                if got != want || after != Ok(m.state) || deadline != Ok(want_deadline) {
                    let skip = d.steps.len().saturating_sub(20);
                    if skip > 1 {
                        d.steps.drain(1..skip);
                        d.steps
                            .insert(1, format!("... ({} earlier steps not shown)", skip - 1));
                    }
                    d.report()
                        .did(format!(
                            "(random walk {walk}; the last step is the one that disagrees)"
                        ))
                        .expected(format!(
                            "{want}, then state() = {:?} and time_wait_deadline() = {}",
                            m.state,
                            d.show_deadline(&Ok(want_deadline))
                        ))
                        .got(format!(
                            "{got}, then state() = {} and time_wait_deadline() = {}",
                            show_state(&after),
                            d.show_deadline(&deadline)
                        ))
                        .hint(why(before, m.passive, e))
                        .fail();
                }
            }
        }
    });
}

// Extreme settings never panic: an MSL so large that start + 2*MSL overflows
// an Instant (TIME-WAIT then simply never ends), an MSL of zero (it ends at
// once), and a `now` earlier than the TIME-WAIT start (a clock mix-up:
// not due).
#[test]
fn test_18_extreme_msl_and_clock_values_never_panic() {
    body("test_18", || {
        let mut d = Driver::at(State::TimeWait, true, Duration::MAX);
        if let Err(m) = d.deadline() {
            d.report()
                .did("called time_wait_deadline() with msl = Duration::MAX")
                .expected("no panic (None: the deadline is beyond what an Instant holds)")
                .got(format!("a panic: {m}"))
                .hint("Duration * 2 and Instant + Duration panic on overflow; use saturating_mul and checked_add")
                .fail();
        }
        d.wait(Duration::from_secs(10 * 365 * 86_400));
        d.reject(Event::Timeout, "with msl = Duration::MAX, TIME-WAIT never ends (and must not panic: saturating_mul, checked_add)");
        d.step(Event::Fin, Action::Ack, State::TimeWait);

        let mut z = Driver::at(State::TimeWait, true, Duration::ZERO);
        let t = z.now;
        z.expect_deadline(
            Some(t),
            "with msl = 0 the deadline is the moment TIME-WAIT began",
        );
        z.step(Event::Timeout, Action::Nothing, State::Closed);

        let mut b = Driver::at(State::TimeWait, true, MSL);
        b.now -= Duration::from_secs(3600);
        b.reject(Event::Timeout, "a `now` before the TIME-WAIT start means no time has passed: not due, and no panic (saturating_duration_since)");
        b.now += Duration::from_secs(3600) + 2 * MSL;
        b.step(Event::Timeout, Action::Nothing, State::Closed);
    });
}
