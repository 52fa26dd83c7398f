//! The two applications this server can run on the event loop. Neither
//! knows about sockets, epoll or partial writes: they see connections come,
//! send bytes, and go, and answer through the [`Outbox`].

use crate::event_loop::{ConnId, Handler, Outbox};

/// Sends every byte back to the connection it came from.
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox<'_>) {
        out.send(conn, data);
    }
}

/// Sends every chunk a connection sends to every *other* connection.
///
/// Chunks, not lines: whatever one read returned is forwarded as it is, so
/// a line may arrive in pieces, but the bytes of one sender arrive in order.
/// A chat server would cut the stream into lines first.
#[derive(Default)]
pub struct Broadcast {
    /// Everyone connected, in joining order. A `Vec` rather than a set: the
    /// hot path iterates over it for every chunk, and joins and leaves are
    /// rare next to messages.
    members: Vec<ConnId>,
}

impl Handler for Broadcast {
    fn on_open(&mut self, conn: ConnId, _out: &mut Outbox<'_>) {
        self.members.push(conn);
    }

    fn on_data(&mut self, conn: ConnId, data: &[u8], out: &mut Outbox<'_>) {
        for &member in &self.members {
            if member != conn {
                out.send(member, data);
            }
        }
    }

    fn on_close(&mut self, conn: ConnId, _out: &mut Outbox<'_>) {
        self.members.retain(|&m| m != conn);
    }
}
