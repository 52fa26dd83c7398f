//! Helpers for chat-style (broadcast) servers: a line from one client goes
//! to every other client.
//!
//! Joining a chat has no acknowledgement, so a test cannot know when the
//! server has registered a new client: it has accepted the connection, but
//! has it added it to the list of receivers yet? [`join`] answers the only
//! way an outside observer can: the new client sends a probe line
//! (`"<name> joined\n"`), and once that line has reached every client
//! already in the chat, the server must have accepted and read the new
//! connection, so it is registered. No sleep is involved.
//!
//! ```no_run
//! use labkit::{chat::join, client::Client, server::Server};
//! let server = Server::spawn("/path/to/chat");
//! let mut a = Client::connect_to(&server);
//! let mut b = join(&server, "b", &mut [&mut a]); // a got "b joined\n"
//! let c = join(&server, "c", &mut [&mut a, &mut b]);
//! ```

use crate::client::{Client, ClientBuilder};
use crate::server::Server;

/// Connects a client to `server` and waits until it is registered: its
/// probe line `"<name> joined\n"` reaches every client in `others`.
#[track_caller]
pub fn join(server: &Server, name: &str, others: &mut [&mut Client]) -> Client {
    join_with(Client::builder(), server, name, others)
}

/// [`join`] with client options, e.g. a small receive buffer
/// ([`ClientBuilder::recv_buffer`]) for a client that will stop reading.
#[track_caller]
pub fn join_with(
    builder: ClientBuilder,
    server: &Server,
    name: &str,
    others: &mut [&mut Client],
) -> Client {
    let mut c = builder.connect_to(server);
    let probe = format!("{name} joined\n");
    c.send(probe.as_bytes());
    for o in others.iter_mut() {
        o.hint(format!(
            "{name} connected and sent the line {probe:?}: every other connected client should get it. Does the server accept the new client and send what it reads to all the others?"
        ));
        o.expect_bytes(probe.as_bytes());
    }
    c
}
