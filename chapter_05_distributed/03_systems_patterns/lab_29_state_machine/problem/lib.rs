//! TCP's connection state machine (RFC 9293, section 3.3.2), as a value
//! that takes one event at a time and says what to send.
//!
//! ```ignore
//! let mut conn = Connection::new(Config::default());
//! let t = Instant::now();
//! assert_eq!(conn.handle(Event::ActiveOpen, t), Ok(Action::Syn)); // connect()
//! assert_eq!(conn.handle(Event::SynAck, t), Ok(Action::Ack));
//! assert_eq!(conn.state(), State::Established);
//! // A FIN that acks a FIN we never sent: rejected, nothing changes.
//! assert!(conn.handle(Event::FinAck, t).is_err());
//! ```
//!
//! The public items below (names, signatures, doc comments) are the
//! contract the tests call; the private fields of `Connection` are yours
//! to change. The README's Spec has the whole table: for each of the 11
//! states and 12 events, the next state and the action, or `Err`. Three
//! rules to keep in mind:
//!
//! - `Err` leaves the machine exactly as it was (state and timer), and
//!   `handle` never panics: the events come from the network, and a peer
//!   must not be able to crash us by sending a FIN at the wrong time.
//! - A RST in SYN-RECEIVED goes back to LISTEN only if SYN-RECEIVED was
//!   reached from LISTEN; from SYN-SENT (a simultaneous open) it goes to
//!   CLOSED. So the machine must remember where it came from.
//! - The clock is injected: `now` is read only when entering TIME-WAIT,
//!   on a FIN in TIME-WAIT (the 2*MSL timer restarts), and on `Timeout`
//!   (legal once `now >= start + 2 * msl`).
#![allow(unused)]

use std::fmt;
use std::time::{Duration, Instant};

/// The eleven states of RFC 9293's diagram (section 3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection (no TCB).
    Closed,
    /// Waiting for a SYN from any remote (a passive open, `listen()`).
    Listen,
    /// Our SYN is sent; waiting for the peer's SYN (`connect()` in progress).
    SynSent,
    /// A SYN is received and answered; waiting for the ACK of our SYN.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// We closed (sent FIN); waiting for its ACK or the peer's FIN.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed (its FIN is acknowledged); waiting for our close.
    CloseWait,
    /// Both sides closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both FINs acknowledged; waiting 2*MSL before forgetting the connection.
    TimeWait,
}

/// What can happen to a connection: a user call, a segment that arrives,
/// or the TIME-WAIT timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// User call: OPEN, passive (`listen()`).
    PassiveOpen,
    /// User call: OPEN, active, remote socket given (`connect()`).
    ActiveOpen,
    /// User call: SEND (data itself is not modelled).
    Send,
    /// User call: CLOSE, "I have no more data to send" (`shutdown(SHUT_WR)`).
    Close,
    /// User call: ABORT, drop the connection now (`SO_LINGER` 0 + `close()`).
    Abort,
    /// Segment: a SYN without ACK.
    Syn,
    /// Segment: a SYN whose ACK acknowledges our SYN.
    SynAck,
    /// Segment: an ACK of our SYN or of our FIN ("rcv ACK of SYN", "rcv
    /// ACK of FIN" in the diagram), with neither SYN nor FIN set.
    Ack,
    /// Segment: a FIN that acknowledges nothing new of ours.
    Fin,
    /// Segment: a FIN that also acknowledges our FIN (note 2 of the diagram).
    FinAck,
    /// Segment: a RST (assumed acceptable: in window, or acking our SYN).
    Rst,
    /// The TIME-WAIT timer fired (the caller's timer; the machine checks it).
    Timeout,
}

/// The control segment to send in answer to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send nothing.
    Nothing,
    /// Send a SYN.
    Syn,
    /// Send a SYN with the ACK of the peer's SYN.
    SynAck,
    /// Send an ACK.
    Ack,
    /// Send a FIN.
    Fin,
    /// Send a RST.
    Rst,
}

/// The machine's one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Maximum Segment Lifetime: how long a segment may live in the
    /// network. TIME-WAIT lasts `2 * msl`.
    pub msl: Duration,
}

impl Default for Config {
    /// RFC 9293's MSL of 2 minutes (so TIME-WAIT lasts 4 minutes; Linux
    /// uses a fixed 60 s instead).
    fn default() -> Config {
        Config {
            msl: Duration::from_secs(120),
        }
    }
}

/// An event the machine does not accept in its current state. The machine
/// is left exactly as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} is not legal in state {state:?}")]
pub struct IllegalTransition {
    /// The state the machine was (and still is) in.
    pub state: State,
    /// The event it rejected.
    pub event: Event,
}

/// One TCP connection's state machine.
#[derive(Debug, Clone)]
pub struct Connection {
    // Your fields: the state, what some states need to remember, the config.
    config: Config,
}

impl Connection {
    /// A connection in CLOSED.
    pub fn new(config: Config) -> Connection {
        todo!()
    }

    /// The current state.
    pub fn state(&self) -> State {
        todo!()
    }

    /// When the TIME-WAIT timer is due: `Some(start + 2 * msl)` in
    /// TIME-WAIT, `None` in every other state (and in the theoretical case
    /// of a deadline too far away for `Instant` to hold).
    pub fn time_wait_deadline(&self) -> Option<Instant> {
        todo!()
    }

    /// Feeds one event at time `now`: on `Ok`, the machine has moved (see
    /// the README's table) and the action is what to send; on `Err`, the
    /// event is not legal here and nothing changed. Never panics.
    pub fn handle(&mut self, event: Event, now: Instant) -> Result<Action, IllegalTransition> {
        todo!("match on (state, event)")
    }
}

impl fmt::Display for State {
    /// The RFC's spelling: `SYN-RECEIVED`, `FIN-WAIT-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
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
        })
    }
}
