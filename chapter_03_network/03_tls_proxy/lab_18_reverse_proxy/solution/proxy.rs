//! Forwarding one request: rewrite it for the upstream, send it through a
//! pooled client, and turn the answer (or the failure) into a response.
//!
//! The body is never looked at. `hyper::body::Incoming` is a stream of
//! frames as they come off the socket; the client's request body becomes
//! the upstream request's body as is, and the upstream's response body
//! becomes the client's response body as is. hyper pulls a frame from one
//! side only when it can write it to the other, so a slow reader on one end
//! slows the writer on the other end (TCP flow control reaches through the
//! proxy) and memory stays at a few buffers per request, whatever the size
//! of the body.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, Scheme};
use hyper::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::hop::strip_hop_by_hop;

/// What the proxy answers with: either the upstream's body, streamed, or a
/// small error page of its own (502, 504). `Either` keeps both without a
/// box or a copy.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The de facto `X-Forwarded-*` headers have no constants in `http`: they
/// were never standardised (RFC 7239's `Forwarded` is the standard one, and
/// fewer servers read it).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Shared by every connection's tasks (behind an `Arc`).
pub struct Proxy {
    /// hyper-util's "legacy" client keeps a pool of idle keep-alive
    /// connections per upstream, so a busy proxy does not pay a TCP
    /// handshake per request (nginx's `keepalive` in an `upstream` block).
    /// It is cheap to share: requests on it run concurrently, each on a
    /// connection of its own (HTTP/1.1 carries one request at a time).
    client: Client<HttpConnector, Incoming>,
    /// `host:port` of the upstream: every request goes there.
    upstream: Authority,
    /// How long to wait for the upstream's response head.
    timeout: Duration,
}

impl Proxy {
    pub fn new(upstream: Authority, timeout: Duration) -> Proxy {
        let mut connector = HttpConnector::new();
        // Small writes (a chunk of a streamed body) should leave at once,
        // not wait for Nagle's algorithm to batch them.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Proxy {
            client,
            upstream,
            timeout,
        }
    }

    /// Forwards `req`, which came from `peer`, and returns what to answer.
    /// Never fails: an upstream that cannot be reached becomes a 502, one
    /// that does not answer in time a 504.
    pub async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();

        // The upstream gets the path and query exactly as the client sent
        // them (a client may even have sent the absolute form
        // `GET http://host/path`; the upstream still gets `/path`). The
        // absolute URI tells the pooled client where to connect; hyper
        // writes the request line in origin form (`GET /path?q HTTP/1.1`).
        let uri = match Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.upstream.clone())
            .path_and_query(target.as_str())
            .build()
        {
            Ok(uri) => uri,
            Err(e) => {
                eprintln!("reverse_proxy: {method} {target}: cannot forward this target: {e}");
                return error_response(StatusCode::BAD_REQUEST, "bad request target");
            }
        };
        parts.uri = uri;
        // Speak HTTP/1.1 to the upstream even to an HTTP/1.0 client: the
        // upstream connection is ours, pooled and kept alive.
        parts.version = Version::HTTP_11;

        // `Host` stays as the client sent it (name-based virtual hosts on
        // the upstream need it); hyper's client adds one only when missing.
        strip_hop_by_hop(&mut parts.headers);
        add_forwarded_headers(&mut parts.headers, peer.ip());

        let upstream_req = Request::from_parts(parts, body);
        // The timeout covers connecting, sending the head (and the body, if
        // the upstream reads it all before answering) and waiting for the
        // response head; not the response body, which may legitimately
        // stream for a long time. nginx splits this into
        // `proxy_connect_timeout` and `proxy_read_timeout` (between two
        // reads); one deadline keeps the lab small.
        match tokio::time::timeout(self.timeout, self.client.request(upstream_req)).await {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // The version is per hop too: an HTTP/1.0 upstream must not
                // make hyper answer our HTTP/1.1 client in 1.0 (and close
                // its connection). hyper downgrades for a 1.0 client itself.
                parts.version = Version::HTTP_11;
                // The body goes back untouched: a stream, not a buffer.
                Response::from_parts(parts, Either::Left(body))
            }
            Ok(Err(e)) => {
                // Refused, reset, closed before a response head, or a
                // response that is not HTTP: the upstream is the problem,
                // not the client, so 502 rather than a 4xx.
                eprintln!(
                    "reverse_proxy: {peer} {method} {target}: upstream failed: {}",
                    chain(&e)
                );
                error_response(StatusCode::BAD_GATEWAY, "bad gateway: the upstream failed")
            }
            Err(_elapsed) => {
                // Dropping the request future drops its upstream connection
                // too (it is not returned to the pool half-used), so a late
                // answer can never be taken for the next request's.
                eprintln!(
                    "reverse_proxy: {peer} {method} {target}: no response head within {:?}",
                    self.timeout
                );
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway timeout: the upstream did not answer in time",
                )
            }
        }
    }
}

/// Appends the client's address to `X-Forwarded-For` (a proxy chain
/// `client, proxy1, proxy2`: each proxy appends the address it saw the
/// request come from) and sets `X-Forwarded-Proto`. Without them the
/// upstream sees every request come from the proxy's address, over plain
/// HTTP, and cannot log, rate-limit or redirect by the real client.
///
/// Trust: anyone can send `X-Forwarded-For: 1.2.3.4`. Only the entries
/// appended by proxies the upstream trusts mean anything, which is why a
/// proxy appends instead of replacing: the upstream reads from the right.
fn add_forwarded_headers(headers: &mut HeaderMap, client: IpAddr) {
    // Several X-Forwarded-For lines form one list (RFC 9110 section 5.3):
    // join them, then append.
    let mut list: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    list.push(client.to_string());
    let joined = HeaderValue::from_str(&list.join(", "))
        .expect("addresses and visible ASCII make a valid header value");
    // `insert` replaces every existing line with the one joined value.
    headers.insert(X_FORWARDED_FOR, joined);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// A short text response the proxy makes itself.
fn error_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!("{text}\n")))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An error and its causes, for the log: hyper-util's top-level error says
/// only "client error (Connect)"; the cause says "Connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_client_to_an_empty_x_forwarded_for() {
        let mut h = HeaderMap::new();
        add_forwarded_headers(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn appends_the_client_to_every_existing_x_forwarded_for_line() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        add_forwarded_headers(&mut h, "::1".parse().unwrap());
        let all: Vec<_> = h.get_all(&X_FORWARDED_FOR).iter().collect();
        assert_eq!(all, ["203.0.113.7, 198.51.100.2, ::1"]);
    }
}
