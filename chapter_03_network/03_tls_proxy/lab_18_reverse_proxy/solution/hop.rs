//! Hop-by-hop headers: the ones that describe a connection, not a message.
//!
//! An HTTP message crosses several connections on its way (client -> proxy,
//! proxy -> upstream). Most headers are *end-to-end*: `Content-Type`,
//! `Authorization`, `Cache-Control` mean the same thing to the final
//! recipient, and a proxy passes them on untouched. A few are *hop-by-hop*
//! (RFC 9110 section 7.6.1): they are about the one connection they arrived
//! on, and forwarding them would be a lie about the next one.
//!
//! - `Connection: close` asks to close *this* connection; the proxy's
//!   connection to the upstream is pooled and should stay open.
//! - `Keep-Alive: timeout=5` is this connection's idle timeout.
//! - `Transfer-Encoding: chunked` is how *this* hop frames the body; the
//!   next hop may frame it with a `Content-Length` or chunk it differently,
//!   and hyper writes the framing it actually uses.
//! - `TE`, `Trailer`, `Upgrade` negotiate things for this connection only.
//! - `Proxy-Authorization` / `Proxy-Authenticate` are credentials for *this
//!   proxy*: forwarding them would leak the client's proxy password to the
//!   upstream.
//! - `Proxy-Connection` is a non-standard `Connection` old clients send.
//!
//! And the list is open: a sender may mark any header as hop-by-hop by
//! naming it in `Connection` (`Connection: close, X-Trace-Hop`). That is why
//! a proxy must read `Connection` *before* removing it.
//!
//! It is a pure function on a header map, so it is tested on its own below,
//! without sockets: the same function serves both directions.

use hyper::HeaderMap;
use hyper::header::{self, HeaderName};

/// The headers that are hop-by-hop whatever `Connection` says.
/// `Keep-Alive` and `Proxy-Connection` have no constant in `http`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes every hop-by-hop header from `headers`: the fixed list above and
/// every header named in a `Connection` header (there may be several
/// `Connection` lines, each a comma-separated list of names).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // First collect the names `Connection` lists: once `Connection` itself
    // is removed, that knowledge is gone.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        // `Connection: close` or `keep-alive` name no header; removing a
        // header that is not there is harmless.
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        // `remove` takes every line of that name, not just the first.
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn names(m: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = m.keys().map(|k| k.as_str().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn removes_the_fixed_list_and_keeps_end_to_end_headers() {
        let mut m = map(&[
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer t"),
            ("Host", "example.test"),
        ]);
        strip_hop_by_hop(&mut m);
        assert_eq!(names(&m), ["authorization", "content-type", "host"]);
    }

    #[test]
    fn removes_the_headers_that_connection_names_in_any_case_and_spacing() {
        let mut m = map(&[
            ("Connection", "close,  X-Hop-One"),
            ("Connection", "x-hop-two"),
            ("X-Hop-One", "1"),
            ("X-HOP-TWO", "2"),
            ("X-Hop-Two", "2 again"),
            ("X-End", "kept"),
        ]);
        strip_hop_by_hop(&mut m);
        assert_eq!(names(&m), ["x-end"]);
    }

    #[test]
    fn ignores_tokens_that_are_not_header_names() {
        let mut m = map(&[("Connection", "close, , not a name, @"), ("X-End", "kept")]);
        strip_hop_by_hop(&mut m);
        assert_eq!(names(&m), ["x-end"]);
    }
}
