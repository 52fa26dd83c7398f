//! The grader for lab 13, chat_server.
//!
//! Every test starts its own server on `127.0.0.1:0` and connects clients.
//! Joining the chat has no acknowledgement: a test knows a client is
//! registered once its probe line ("b joined") has reached the clients
//! already there (`labkit::chat::join`), never after a sleep.

use labkit::chat::{join, join_with};
use labkit::client::Client;
use labkit::data;
use labkit::server::Server;
use labkit::wait::{SETTLE_DEADLINE, settle};

const BIN: &str = env!("CARGO_BIN_EXE_chat_server");

/// The README's limit on one line, newline included.
const MAX_LINE: usize = 64 * 1024;

/// The README's limit on the output queued for one client.
const MAX_PENDING: usize = 1024 * 1024;

/// What a slow client may cost the server, at most, in resident memory.
const RSS_LIMIT_KIB: u64 = 32 * 1024;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A server with clients `a`, `b` and `c`, each known to be registered.
fn three(server: &Server) -> (Client, Client, Client) {
    let mut a = Client::connect_to(server);
    let mut b = join(server, "b", &mut [&mut a]);
    let c = join(server, "c", &mut [&mut a, &mut b]);
    (a, b, c)
}

/// Stops the server (SIGSTOP) and waits until /proc says it is stopped:
/// a /proc fact with no event, so it is polled with a deadline.
fn freeze(server: &Server) {
    server.signal(libc::SIGSTOP);
    let stopped = settle(
        SETTLE_DEADLINE,
        || labkit::procfs::state(server.pid()),
        |s| s == Some('T'),
    );
    if stopped.is_err() {
        server.signal(libc::SIGCONT);
        server.expect_alive("sent SIGSTOP");
        server
            .report()
            .did("sent SIGSTOP to the server")
            .expected("its state in /proc to become T (stopped)")
            .got("it did not stop")
            .hint("this is a problem in the test setup, not in your code")
            .fail();
    }
}

/// `a` sends `data` in 64 KiB rounds (each ends with a newline); after each
/// round every reader must have received it. A client that is in the chat
/// but not among the readers gets all of it queued.
fn flood(a: &mut Client, readers: &mut [&mut Client], data: &[u8], hint: &str) {
    for chunk in data.chunks(64 << 10) {
        a.send(chunk);
        for r in readers.iter_mut() {
            r.hint(hint);
            r.expect_bytes(chunk);
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// A line from one client reaches every other client, and not its sender (proved by the sender's next bytes being someone else's line).
#[test]
fn test_01_sends_each_line_to_every_other_client_not_the_sender() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);

    a.send_line("hello from a");
    // First prove the others got it...
    for (name, o) in [("b", &mut b), ("c", &mut c)] {
        o.hint(format!("a sent a line; {name} is connected and registered (its probe line reached the others) but did not get it: do you write each complete line to every connection except the sender?"));
        o.expect_bytes(b"hello from a\n");
    }
    // ...then that the sender did not: the next thing `a` receives must be
    // b's next line. Had the server sent a's line back to a, it would have
    // written it before b even received it, so it would come first.
    b.send_line("from b");
    a.hint("a's next bytes should be b's line: did a get its own line back? A chat server never sends a line to its sender");
    a.expect_bytes(b"from b\n");
    c.expect_bytes(b"from b\n");
    server.expect_alive("sent lines between three clients");
}

// A line sent in three fragments reaches the others only once its newline has arrived, and in one piece; a line from someone else sent meanwhile comes first.
#[test]
fn test_02_sends_a_line_sent_in_fragments_only_once_it_is_complete() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);

    for fragment in ["hel", "lo, wor", "ld"] {
        a.send(fragment.as_bytes());
    }
    // a's fragments reached the server before c's line: a server that sent
    // fragments on as they came would have written them to b first.
    c.send_line("c: in the middle");
    b.hint("a sent \"hel\", \"lo, wor\" and \"ld\" (no newline yet), then c sent a line: b should get c's line first, since a's line is not complete. Do you send bytes on before their line's newline has arrived? Keep the unterminated tail per connection until its newline comes");
    b.expect_bytes(b"c: in the middle\n");
    a.hint("c sent a line while a's own line was still incomplete; a should get c's line");
    a.expect_bytes(b"c: in the middle\n");

    a.send(b"!\n");
    for (name, o) in [("b", &mut b), ("c", &mut c)] {
        o.hint(format!("a sent \"hel\", \"lo, wor\", \"ld\" and then \"!\\n\" as separate segments: {name} should get the whole line \"hello, world!\\n\". Do you keep the start of a line across reads (the partial tail) and send it with the rest?"));
        o.expect_bytes(b"hello, world!\n");
    }
    server.expect_alive("sent a line in four fragments");
}

// Several lines in one segment are several messages: each arrives whole, and complete lines go out at once even when the same read ends with the start of the next one.
#[test]
fn test_03_sends_each_line_of_a_packet_that_holds_several() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);

    a.send(b"one\ntwo\nthree\n");
    for o in [&mut b, &mut c] {
        o.hint("a sent \"one\\ntwo\\nthree\\n\" in one segment: every line should go out, in order. Do you handle only the first line of a read?");
        for line in ["one\n", "two\n", "three\n"] {
            o.expect_bytes(line.as_bytes());
        }
    }

    a.send(b"four\nfi");
    b.hint("a sent \"four\\nfi\" in one segment: \"four\\n\" is complete and should go out now, without waiting for the rest of the next line. Do you hold back a whole read when it does not end with a newline?");
    b.expect_bytes(b"four\n");
    a.send(b"ve\n");
    b.hint("a then sent \"ve\\n\": b should get \"five\\n\". Do you keep the tail \"fi\" of the earlier read?");
    b.expect_bytes(b"five\n");
    c.expect_bytes(b"four\nfive\n");

    let many: String = (0..1000).map(|i| format!("line {i} of 1000\n")).collect();
    a.send(many.as_bytes());
    for o in [&mut b, &mut c] {
        o.hint("a sent 1000 lines in one write: all should go out, in order, each once");
        o.expect_bytes(many.as_bytes());
    }
    server.expect_alive("sent several lines per segment");
}

// Eight bursts of 512 KiB of lines, each in one write, reach both other clients byte for byte: one readiness event can stand for much more than one read.
#[test]
fn test_04_sends_bursts_of_lines_whole_to_everyone() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);
    for round in 0..8 {
        let data = data::text(512 << 10, 40 + round);
        a.send(&data);
        for (name, o) in [("b", &mut b), ("c", &mut c)] {
            o.hint(format!("a sent 512 KiB of lines in one write (burst {} of 8) and {name} got only part of it before the server went quiet: mio is edge-triggered, so do you read until WouldBlock on each event? Bytes left in the kernel get no new event", round + 1));
            o.expect_bytes(&data);
        }
    }
    server.expect_alive("sent 8 bursts of 512 KiB");
}

// Clients leave by closing, by resetting (RST) and by half-closing; the others keep talking, and a newcomer joins.
#[test]
fn test_05_keeps_serving_the_others_when_clients_leave() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, c) = three(&server);
    let d = join(&server, "d", &mut [&mut a, &mut b]);
    let mut e = join(&server, "e", &mut [&mut a, &mut b]);
    c.reset();
    drop(d);
    e.half_close();

    a.send_line("after c, d and e left");
    b.hint("c reset its connection, d closed it and e half-closed; then a sent a line and b did not get it: does a failed write to a departed client stop the broadcast, or take the server down? A read of 0 bytes or an error means that one client left");
    b.expect_bytes(b"after c, d and e left\n");
    let mut f = join(&server, "f", &mut [&mut a, &mut b]);
    b.send_line("welcome f");
    a.expect_bytes(b"welcome f\n");
    f.hint("f joined after others had left (its probe reached a and b), then b sent a line");
    f.expect_bytes(b"welcome f\n");
    server.expect_alive("had clients leave by close, reset and half-close");
}

// 20 clients join and leave (10 close, 10 reset): the server's open descriptors come back to where they were, so every departed client was closed.
#[test]
fn test_06_closes_every_client_that_leaves_no_fd_leak() {
    let server = Server::spawn(BIN);
    let mut a = Client::connect_to(&server);
    let mut b = join(&server, "b", &mut [&mut a]);
    let base = server.open_fds();
    let mut crowd = Vec::new();
    for i in 0..20 {
        crowd.push(join(&server, &format!("guest{i}"), &mut [&mut a, &mut b]));
    }
    for (i, c) in crowd.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(c);
        } else {
            c.reset();
        }
    }
    let did = "with a and b connected, 20 more clients joined (each probe line reached a and b), then 10 closed and 10 reset";
    // Whether the server has closed them yet has no event to wait for:
    // poll /proc with a deadline.
    if let Err(now) = settle(SETTLE_DEADLINE, || server.open_fds(), |n| n <= base) {
        server
            .report()
            .did(did)
            .expected(format!(
                "the server's open descriptors (/proc/{}/fd) back to {base} within {SETTLE_DEADLINE:?}",
                server.pid()
            ))
            .got(format!("{now} open descriptors"))
            .hint("when a read returns 0 (end of file) or an error, do you deregister the connection, drop its socket and remove it from your table? With edge triggering no second event comes to remind you")
            .fail();
    }
    a.send_line("the crowd has gone");
    b.expect_bytes(b"the crowd has gone\n");
    server.expect_alive(did);
}

// A client with output queued in the server (it does not read, and its kernel send queue is full) sends a last line and half-closes, both arriving in one event: the others get that line, and the server survives.
#[test]
fn test_07_sends_the_last_line_that_arrives_with_the_fin_of_a_client_with_pending_output() {
    let server = Server::spawn(BIN);
    let mut a = Client::connect_to(&server);
    let mut b = join(&server, "b", &mut [&mut a]);
    let mut x = join_with(
        Client::builder().recv_buffer(4096),
        &server,
        "x",
        &mut [&mut a, &mut b],
    );
    // x does not read. a sends 64 KiB rounds (b reads them) until the
    // kernel's send queue for x (tx_queue in /proc/net/tcp) has stopped
    // growing for two rounds: from then on, what the server writes to x
    // waits in the server's own queue for it. Two more rounds make sure some
    // does, well under the 1 MiB that would get x dropped. (Where the kernel
    // never fills up within 6 MiB, the test goes on without that.)
    let mut sent = Vec::new();
    let mut last = 0;
    let mut flat = 0;
    let mut extra = 0;
    for round in 0..96u64 {
        let chunk = data::text(64 << 10, 70 + round);
        flood(
            &mut a,
            &mut [&mut b],
            &chunk,
            "a sent 64 KiB of lines while x was not reading; b reads and should get them all: does a client that does not read hold up the others?",
        );
        sent.extend_from_slice(&chunk);
        if flat >= 2 {
            extra += 1;
            if extra == 2 {
                break;
            }
            continue;
        }
        let queued =
            labkit::procfs::tcp_connection(server.addr(), x.local_addr()).map_or(0, |s| s.tx_queue);
        flat = if queued < last + (32 << 10) {
            flat + 1
        } else {
            0
        };
        last = queued;
    }
    let data = sent;

    // Freeze the server so that x's line and its FIN both reach the kernel
    // before the server looks: one event will report data and hang-up.
    freeze(&server);
    x.send_line("x's last words");
    x.half_close();
    server.signal(libc::SIGCONT);

    for (name, o) in [("a", &mut a), ("b", &mut b)] {
        o.hint(format!("x (which has output queued, as it does not read) sent a line and shut down its sending side; the line and the FIN arrived in one event. {name} should get the line: do you close the connection on the hang-up flag before reading what came with it? Read until end of file, send on the complete lines, then close"));
        o.expect_bytes(b"x's last words\n");
    }
    server.expect_alive("had a client with pending output send a line and a FIN in one event");
    a.send_line("a is still here");
    b.hint("x left with output still queued for it, and x does not read: does the server wait for that output to drain before closing x? It never will. Drop what is queued for a client that has left");
    b.expect_bytes(b"a is still here\n");

    x.hint("x half-closed: it has left the chat, so the server should close its connection (what x got before must be a prefix of a's lines)");
    let got = x.read_until_closed();
    if !data.starts_with(&got) {
        x.report()
            .expected("a prefix of what a sent, then the close")
            .got(format!("{} bytes that are not a prefix of it", got.len()))
            .hint("does the server send x something other than the others' lines, or reorder its queue?")
            .fail();
    }
    server.expect_alive("closed x");
}

// A line of exactly the limit (64 KiB with its newline) goes through; a line that reaches the limit without a newline earns its sender an error line and a close, and reaches nobody.
#[test]
fn test_08_disconnects_a_client_whose_line_is_too_long() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);

    let mut longest = vec![b'L'; MAX_LINE - 1];
    longest.push(b'\n');
    a.send(&longest);
    b.hint("a sent a line of 65536 bytes, newline included: the limit allows it, so b should get it whole");
    b.expect_bytes(&longest);
    c.expect_bytes(&longest);

    let too_long = vec![b'X'; MAX_LINE];
    a.send(&too_long);
    a.hint("a sent 65536 bytes with no newline: the server should answer \"error: line too long\\n\" and close the connection. Do you limit how long the unterminated tail may grow?");
    let reply = a.read_line();
    if !reply.starts_with("error") {
        a.report()
            .expected(
                "a line starting with \"error\" (the README says: \"error: line too long\\n\")",
            )
            .got(format!("{reply:?}"))
            .hint("what do you send to a client whose line is too long?")
            .fail();
    }
    a.expect_closed();

    c.send_line("c after the long line");
    b.hint("a's over-long line must reach nobody: b's next bytes should be c's line. Do you send on part of a line before its newline, or the over-long line itself?");
    b.expect_bytes(b"c after the long line\n");
    server.expect_alive("sent an over-long line");
}

// A client that never reads gets dropped once 1 MiB is queued for it: meanwhile the others receive 64 MiB of lines in full, and the server stays under 32 MiB of memory.
#[test]
fn test_09_heavy_drops_a_client_that_never_reads_in_bounded_memory() {
    let server = Server::spawn(BIN);
    let mut a = Client::connect_to(&server);
    let mut b = join(&server, "b", &mut [&mut a]);
    let mut slow = join_with(
        Client::builder().recv_buffer(4096),
        &server,
        "slow",
        &mut [&mut a, &mut b],
    );
    let data = data::text(64 << 20, 90);
    flood(
        &mut a,
        &mut [&mut b],
        &data,
        "a sends 64 MiB of lines in 64 KiB rounds and b reads each round; another client (slow) never reads. Does the slow client hold up the others: a blocking write, or waiting for its queue to drain?",
    );
    let did = "clients a, b and slow joined (slow with a 4 KiB receive buffer); a sent 64 MiB of lines in 64 KiB rounds, b read each round, slow read nothing";
    server.expect_alive(did);
    let rss = server.rss_kib();
    if rss > RSS_LIMIT_KIB {
        server
            .report()
            .did(did)
            .expected(format!(
                "the server's resident memory (VmRSS) under {} MiB: slow should have been dropped once more than {} MiB was queued for it",
                RSS_LIMIT_KIB / 1024,
                MAX_PENDING >> 20
            ))
            .got(format!("VmRSS {} MiB", rss / 1024))
            .hint("do you bound the output queued for one client? Past 1 MiB, disconnect it (and free its queue)")
            .fail();
    }
    slow.hint("slow never read while 64 MiB went by: the server should have disconnected it once more than 1 MiB was queued for it");
    let got = slow.read_until_closed();
    if !data.starts_with(&got) {
        slow.report()
            .expected("a prefix of a's lines, then the close")
            .got(format!("{} bytes that are not a prefix of them", got.len()))
            .hint("does your queue for a slow client drop or reorder bytes?")
            .fail();
    }
    a.send_line("after the flood");
    b.expect_bytes(b"after the flood\n");
    server.expect_alive("dropped a client that never reads");
}

// With 21 clients connected and registered, the server is still one thread: the event loop does all the work.
#[test]
fn test_10_runs_on_one_thread_while_serving_21_clients() {
    let server = Server::spawn(BIN);
    let mut a = Client::connect_to(&server);
    let mut crowd = Vec::new();
    for i in 0..20 {
        crowd.push(join(&server, &format!("guest{i}"), &mut [&mut a]));
    }
    // All 21 are connected and served: any thread serving one of them
    // exists right now, so there is nothing to wait for.
    let threads = server.threads();
    if threads != 1 {
        server
            .report()
            .did("connected 21 clients, each (after the first) sent a probe line that reached the first")
            .expected(format!(
                "1 thread in the server (/proc/{}/status: Threads)",
                server.pid()
            ))
            .got(format!("{threads} threads"))
            .hint("this lab is one thread with one mio::Poll: do you spawn a thread per connection, or use a thread pool or runtime?")
            .fail();
    }
    server.expect_alive("served 21 clients");
    drop(crowd);
}

// What a leaving client leaves behind: its unterminated tail is not a message. a sends a line
// without its newline and half-closes; once the server has closed a, c's next line must be the
// first thing b gets (a server that flushes the tail at end of file sends it first).
#[test]
fn test_11_drops_the_unterminated_tail_of_a_client_that_leaves() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);
    a.send(b"goodbye without a newline");
    a.half_close();
    a.hint("a sent a tail with no newline and half-closed: it has left, so the server should close its connection");
    a.expect_closed();
    c.send_line("c after a left");
    b.hint("a left with an unterminated tail \"goodbye without a newline\": the README says it is dropped, not broadcast. b's next bytes should be c's line: do you flush the partial line at end of file?");
    b.expect_bytes(b"c after a left\n");
    server.expect_alive("had a client leave with an unterminated line");
}

// The line limit holds across reads: 60,000 bytes of a line (read by the server), then 6,000 more
// and the newline: the line is 66,001 bytes, over the limit, so the sender gets the error and is
// closed, and nobody gets any of it.
#[test]
fn test_12_counts_the_line_limit_across_reads() {
    let server = Server::spawn(BIN);
    let (mut a, mut b, mut c) = three(&server);
    a.send(&vec![b'P'; 60_000]);
    // The first part is in the server's buffer once its side of a's
    // connection holds nothing unread: a /proc fact with no event.
    let (srv, me) = (server.addr(), a.local_addr());
    let read = settle(
        SETTLE_DEADLINE,
        || labkit::procfs::tcp_connection(srv, me).map(|s| s.rx_queue),
        |q| q == Some(0),
    );
    if read.is_err() {
        a.report()
            .did("sent 60000 bytes of a line, no newline")
            .expected("the server to read them (Recv-Q 0 on its side)")
            .got("they were still unread")
            .hint("does the server read a connection until WouldBlock?")
            .fail();
    }
    let mut rest = vec![b'Q'; 6_000];
    rest.push(b'\n');
    a.send(&rest);
    a.hint("a sent a line of 66001 bytes (newline included) in two parts, the first already read: the limit is 65536 for the whole line, so a should get \"error: line too long\\n\" and be closed. Do you check the length of partial tail + new bytes up to the newline?");
    let reply = a.read_line();
    if !reply.starts_with("error") {
        a.report()
            .expected("a line starting with \"error\" (\"error: line too long\\n\")")
            .got(format!("{reply:?}"))
            .hint("is the limit checked only while no newline has come?")
            .fail();
    }
    a.expect_closed();
    c.send_line("c after the long line");
    b.hint("a's 66001-byte line is over the limit and must reach nobody: b's next bytes should be c's line");
    b.expect_bytes(b"c after the long line\n");
    server.expect_alive("sent a line over the limit in two parts");
}
