//! Forwarding one request: choose, send, retry once if that is safe,
//! and pass the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::upstreams::{InFlight, Upstream, Upstreams};

/// Every body the balancer sends: a client's streamed body, a buffered
/// copy for a retry, or an upstream's streamed answer.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The pooled client to all upstreams (keep-alive connections are reused
/// across requests and probes).
pub type HttpClient = Client<HttpConnector, Body>;

/// The largest request body kept in memory so that an idempotent request
/// can be sent a second time. A bigger one (or one of unknown length) is
/// streamed and not retried: the balancer does not hold a whole upload
/// just in case. Envoy has the same trade-off (its per-request buffer
/// limit: a request that outgrows it is not retried).
const RETRY_BUFFER: u64 = 64 * 1024;

/// Hop-by-hop headers (RFC 9110 section 7.6.1): they describe one
/// connection, so they end at the balancer, in both directions.
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

/// What every request handler shares.
pub struct Balancer {
    pub upstreams: Upstreams,
    pub client: HttpClient,
}

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    // Small requests and answers go out at once, not after Nagle's delay.
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// hyper's service: never an error, every failure is an HTTP answer.
pub async fn handle(
    lb: Arc<Balancer>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = forward(&lb, peer, request)
        .await
        .unwrap_or_else(error_response);
    Ok(response)
}

/// Methods that RFC 9110 (section 9.2.2) calls idempotent: sending one
/// twice has the same effect as sending it once. POST and PATCH are not:
/// a POST that reached an upstream which then died may have been acted on
/// (an order placed, a payment made) even though no answer came back, and
/// sending it to a second upstream would do it twice.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The request body, in the form its method allows.
enum Payload {
    /// Idempotent and small: kept, so it can be sent again.
    Replayable(Bytes),
    /// Sent once, streamed; `None` once it has been.
    Once(Option<Incoming>),
}

impl Payload {
    async fn new(method: &Method, body: Incoming) -> Result<Payload, StatusCode> {
        if !is_idempotent(method) {
            return Ok(Payload::Once(Some(body)));
        }
        // A GET, HEAD or DELETE almost never has a body: nothing to keep.
        if body.is_end_stream() {
            return Ok(Payload::Replayable(Bytes::new()));
        }
        let announced = body.size_hint().upper();
        if announced.is_some_and(|n| n <= RETRY_BUFFER) {
            // Content-Length said it is small; `Limited` holds the client
            // to that.
            let bytes = Limited::new(body, RETRY_BUFFER as usize)
                .collect()
                .await
                .map_err(|_| StatusCode::BAD_REQUEST)?
                .to_bytes();
            return Ok(Payload::Replayable(bytes));
        }
        Ok(Payload::Once(Some(body)))
    }

    /// The body for the next attempt, or `None` when it is spent.
    fn take(&mut self) -> Option<Body> {
        match self {
            Payload::Replayable(bytes) => Some(full(bytes.clone())),
            Payload::Once(body) => body.take().map(|b| b.boxed()),
        }
    }
}

/// Chooses an upstream, sends, retries once when allowed; `Err` is the
/// status to answer with.
async fn forward(
    lb: &Balancer,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, StatusCode> {
    let (parts, body) = request.into_parts();
    let headers = request_headers(&parts.headers, peer);
    let mut payload = Payload::new(&parts.method, body).await?;

    let mut failed: Option<&Arc<Upstream>> = None;
    loop {
        let Some(upstream) = lb.upstreams.pick(failed) else {
            // Nobody healthy to ask: 503, the balancer's own verdict. After
            // a failure with no one left to retry on: 502, as for a
            // request that was not retried.
            return Err(match failed {
                None => StatusCode::SERVICE_UNAVAILABLE,
                Some(_) => StatusCode::BAD_GATEWAY,
            });
        };
        let Some(body) = payload.take() else {
            return Err(StatusCode::BAD_GATEWAY);
        };
        // Counted from now: least-connections must see this request while
        // the upstream is still working on it.
        let in_flight = InFlight::start(upstream);
        let outgoing = upstream_request(&parts, &headers, upstream, body)?;
        match lb.client.request(outgoing).await {
            // The response head is here: from now on the request is the
            // upstream's, and whatever happens to the body is passed on.
            Ok(response) => return Ok(client_response(response, in_flight)),
            Err(e) => {
                // The client's `Err` means no response head arrived:
                // refused, or the connection closed or reset first.
                eprintln!(
                    "{} {} -> {}: {e}",
                    parts.method, parts.uri, upstream.authority
                );
                if failed.is_some() || matches!(payload, Payload::Once(_)) {
                    return Err(StatusCode::BAD_GATEWAY);
                }
                failed = Some(upstream);
            }
        }
    }
}

/// The request for `upstream`: the same method, path and query and
/// headers, HTTP/1.1 whatever the client spoke.
fn upstream_request(
    parts: &Parts,
    headers: &HeaderMap,
    upstream: &Upstream,
    body: Body,
) -> Result<Request<Body>, StatusCode> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("http://{}{target}", upstream.authority)
        .parse()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    // The client's Host goes through unchanged: hyper's client adds one
    // from the URI only when the request has none (an HTTP/1.0 client).
    *request.headers_mut() = headers.clone();
    Ok(request)
}

/// The client's headers without hop-by-hop ones, plus the forwarding
/// headers that tell the upstream who really asked.
fn request_headers(incoming: &HeaderMap, peer: SocketAddr) -> HeaderMap {
    let mut headers = end_to_end(incoming);
    let ip = peer.ip().to_string();
    // Several X-Forwarded-For lines mean one list, comma-separated.
    let mut chain: Vec<&str> = incoming
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    chain.push(&ip);
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    headers
}

/// `headers` without the hop-by-hop ones and those `Connection` names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) || named.contains(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The upstream's answer for the client; the body carries the in-flight
/// guard until it is done.
fn client_response(response: Response<Incoming>, in_flight: InFlight) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts.headers = end_to_end(&parts.headers);
    let body = Tracked {
        inner: body,
        in_flight: Some(in_flight),
    };
    Response::from_parts(parts, body.boxed())
}

/// An upstream's response body that counts its request in flight until
/// the last frame has been read (or the body is dropped: the client went
/// away, and hyper drops the response with it).
struct Tracked {
    inner: Incoming,
    in_flight: Option<InFlight>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Both fields are `Unpin`, so the pin can be looked through.
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        // Count the request out as soon as its end is known: the end of
        // the stream, an error, or the last frame of a body whose length
        // was announced (hyper may not poll again after that one).
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer the balancer makes itself.
fn error_response(status: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
