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
//! # Design
//!
//! The machine is a pure function of (state, event, now) to (state, action):
//! no sockets, no threads, no clock of its own. The caller (a TCP stack, or
//! a test) decodes a segment into an [`Event`], calls [`Connection::handle`],
//! and sends the [`Action`] it gets back. Keeping the machine free of I/O
//! is what makes it testable transition by transition, and it is how real
//! protocol stacks are written: smoltcp's `tcp::Socket`, quinn-proto's
//! connection and rustls's handshake are all state machines fed by the
//! caller, with time passed in.
//!
//! ## Why a runtime enum and a `Result`, not a typestate
//!
//! A typestate API (`Closed::connect(self) -> SynSent`,
//! `SynSent::on_syn_ack(self) -> Established`) makes an illegal transition
//! a compile error, which is the right tool when *the program* decides
//! what happens next: a builder, a file handle, a handshake written as
//! straight-line code. A TCP connection is driven by the network: which
//! segment arrives next is decided at run time by a peer the compiler has
//! never seen, possibly a buggy or hostile one. The program must hold "a
//! connection in some state" in one place (a slot in a connection table)
//! and match on it, which brings back a runtime enum anyway; and a segment
//! that makes no sense in the current state is not a bug in this program
//! but an input to reject. So illegal transitions are *rejected*, with a
//! typed error that names the state and the event, and never a panic: a
//! peer must not be able to crash us by sending a FIN at the wrong time.
//!
//! What *can* be made unrepresentable is illegal **data**: the private
//! [`Tcb`] enum carries the TIME-WAIT start only in `TimeWait`, and "was
//! this SYN-RECEIVED reached from LISTEN?" only in `SynReceived`. No field
//! can hold a stale timer in ESTABLISHED, and the flag that decides where a
//! RST in SYN-RECEIVED goes cannot survive into the next connection.
//!
//! ## What is modelled
//!
//! User calls follow section 3.10's rules for OPEN, SEND, CLOSE and ABORT:
//! legal where the RFC performs them, rejected where it answers "error:
//! connection does not exist", "already exists" or "closing". Segments
//! follow the diagram: each segment event is the next control segment a
//! correct peer sends, plus RST (note 3: a RST moves any synchronized state
//! to CLOSED) and the one retransmission that matters, a FIN in TIME-WAIT,
//! which is the reason TIME-WAIT exists. Data, sequence numbers and
//! retransmission timers are not modelled: `Send` only says whether the
//! RFC accepts a SEND call in this state.
//!
//! ## Time
//!
//! The clock is injected: every call takes `now`. The machine reads it in
//! three places only: entering TIME-WAIT (the 2*MSL timer starts), a FIN in
//! TIME-WAIT (it restarts), and [`Event::Timeout`] (is it due?). So a test
//! checks the expiry to the nanosecond, and production code passes
//! `Instant::now()`.

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

/// The transmission control block, as far as the machine needs it: the
/// state, with the data that only some states have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tcb {
    Closed,
    Listen,
    SynSent,
    /// `passive`: reached from LISTEN (a SYN to a listener), as opposed to
    /// from SYN-SENT (a simultaneous open). Note 1: a RST returns a
    /// passive one to LISTEN, so the listener keeps listening.
    SynReceived {
        passive: bool,
    },
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    /// `since`: when the 2*MSL timer (re)started.
    TimeWait {
        since: Instant,
    },
}

/// One TCP connection's state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct Connection {
    config: Config,
    tcb: Tcb,
}

impl Connection {
    /// A connection in CLOSED.
    pub fn new(config: Config) -> Connection {
        Connection {
            config,
            tcb: Tcb::Closed,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.tcb {
            Tcb::Closed => State::Closed,
            Tcb::Listen => State::Listen,
            Tcb::SynSent => State::SynSent,
            Tcb::SynReceived { .. } => State::SynReceived,
            Tcb::Established => State::Established,
            Tcb::FinWait1 => State::FinWait1,
            Tcb::FinWait2 => State::FinWait2,
            Tcb::CloseWait => State::CloseWait,
            Tcb::Closing => State::Closing,
            Tcb::LastAck => State::LastAck,
            Tcb::TimeWait { .. } => State::TimeWait,
        }
    }

    /// When the TIME-WAIT timer is due: `Some(start + 2 * msl)` in
    /// TIME-WAIT, `None` in every other state (and in the theoretical case
    /// of a deadline too far away for `Instant` to hold).
    pub fn time_wait_deadline(&self) -> Option<Instant> {
        match self.tcb {
            Tcb::TimeWait { since } => since.checked_add(self.two_msl()),
            _ => None,
        }
    }

    /// Feeds one event at time `now`: on `Ok`, the machine has moved (see
    /// the README's table) and the action is what to send; on `Err`, the
    /// event is not legal here and nothing changed. Never panics.
    pub fn handle(&mut self, event: Event, now: Instant) -> Result<Action, IllegalTransition> {
        use Action as A;
        use Event as E;
        use Tcb as T;

        let (next, action) = match (self.tcb, event) {
            // --- Opening (3.10.1, 3.10.2). ---
            (T::Closed, E::PassiveOpen) => (T::Listen, A::Nothing),
            (T::Closed, E::ActiveOpen) => (T::SynSent, A::Syn),
            // A listener told to connect becomes active: the diagram's
            // "SEND / snd SYN" arrow, and OPEN in LISTEN does the same.
            (T::Listen, E::ActiveOpen | E::Send) => (T::SynSent, A::Syn),
            (T::Listen, E::Syn) => (T::SynReceived { passive: true }, A::SynAck),
            // Simultaneous open: both sides sent a SYN, each sees the
            // other's SYN before any SYN,ACK, and answers it.
            (T::SynSent, E::Syn) => (T::SynReceived { passive: false }, A::SynAck),
            (T::SynSent, E::SynAck) => (T::Established, A::Ack),
            // In a simultaneous open the peer's SYN,ACK acknowledges our SYN
            // (RFC 9293, Figure 8, line 6): that completes it, nothing to send.
            (T::SynReceived { .. }, E::Ack | E::SynAck) => (T::Established, A::Nothing),

            // --- Data: SEND is accepted (queued or sent) until we close. ---
            (T::SynSent | T::SynReceived { .. } | T::Established | T::CloseWait, E::Send) => {
                (self.tcb, A::Nothing)
            }

            // --- Closing (3.10.4). ---
            // Before any SYN of the peer is acknowledged there is nothing
            // to close gracefully: the TCB is deleted.
            (T::Listen | T::SynSent, E::Close) => (T::Closed, A::Nothing),
            (T::SynReceived { .. } | T::Established, E::Close) => (T::FinWait1, A::Fin),
            (T::CloseWait, E::Close) => (T::LastAck, A::Fin),
            (T::Established, E::Fin) => (T::CloseWait, A::Ack),
            (T::FinWait1, E::Ack) => (T::FinWait2, A::Nothing),
            // Simultaneous close: the peer's FIN crossed ours.
            (T::FinWait1, E::Fin) => (T::Closing, A::Ack),
            // Note 2: the peer's FIN carries the ACK of ours, both at once.
            (T::FinWait1, E::FinAck) => (T::TimeWait { since: now }, A::Ack),
            (T::FinWait2, E::Fin) => (T::TimeWait { since: now }, A::Ack),
            (T::Closing, E::Ack) => (T::TimeWait { since: now }, A::Nothing),
            (T::LastAck, E::Ack) => (T::Closed, A::Nothing),
            // The peer did not get our last ACK and sent its FIN again:
            // acknowledge it, and wait 2*MSL from now (3.10.7.4), since a
            // copy of this ACK may be lost too.
            (T::TimeWait { .. }, E::Fin) => (T::TimeWait { since: now }, A::Ack),
            // `saturating_duration_since`: a `now` before the start (a
            // caller's clock mix-up) counts as no time passed, not a panic.
            (T::TimeWait { since }, E::Timeout)
                if now.saturating_duration_since(since) >= self.two_msl() =>
            {
                (T::Closed, A::Nothing)
            }

            // --- Resets. ---
            // A RST to our SYN is a refused connection (ECONNREFUSED).
            (T::SynSent, E::Rst) => (T::Closed, A::Nothing),
            // Note 1: a half-open connection from a listener goes back to
            // LISTEN; one from our own connect() is refused.
            (T::SynReceived { passive }, E::Rst) => {
                (if passive { T::Listen } else { T::Closed }, A::Nothing)
            }
            // Any synchronized state: the connection is gone (ECONNRESET).
            // RFC 1337 argues for ignoring a RST in TIME-WAIT; RFC 9293
            // (and Linux by default) closes.
            (
                T::Established
                | T::FinWait1
                | T::FinWait2
                | T::CloseWait
                | T::Closing
                | T::LastAck
                | T::TimeWait { .. },
                E::Rst,
            ) => (T::Closed, A::Nothing),

            // --- ABORT (3.10.5): always CLOSED. A RST tells the peer to
            // drop its side too; RFC 9293 sends none once both FINs have
            // been exchanged (CLOSING, LAST-ACK, TIME-WAIT): no data can
            // flow any more, so there is nothing left to reset. ---
            (T::Listen | T::SynSent | T::Closing | T::LastAck | T::TimeWait { .. }, E::Abort) => {
                (T::Closed, A::Nothing)
            }
            (
                T::SynReceived { .. } | T::Established | T::FinWait1 | T::FinWait2 | T::CloseWait,
                E::Abort,
            ) => (T::Closed, A::Rst),

            // Everything else: an OPEN on an open connection, a CLOSE after
            // a CLOSE, a segment the diagram has no arrow for, a timeout
            // that is not due. Rejected; `self` is untouched.
            _ => {
                return Err(IllegalTransition {
                    state: self.state(),
                    event,
                });
            }
        };
        self.tcb = next;
        Ok(action)
    }

    /// 2*MSL, saturating: a huge MSL means "TIME-WAIT forever", not an
    /// overflow panic.
    fn two_msl(&self) -> Duration {
        self.config.msl.saturating_mul(2)
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
