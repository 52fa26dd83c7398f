//! The grader for lab 17, https_server.
//!
//! Every test makes its own small public key infrastructure with rcgen, as
//! a real deployment has: a root CA that only the clients know, an
//! intermediate CA signed by the root, and a leaf certificate for
//! `localhost` and `127.0.0.1` signed by the intermediate. The server gets
//! the leaf and the intermediate in CERT_PEM (leaf first) and the leaf's key
//! in KEY_PEM; the clients trust the root alone, so a handshake succeeds
//! only if the server sends the whole chain.
//!
//! Two kinds of client: reqwest (a real HTTPS client, for the routes) and
//! a bare rustls `ClientConnection` over a blocking `TcpStream` with 5 s
//! timeouts, for looking at the handshake itself (the ALPN protocol, the
//! TLS version, the certificates sent, the error a client gets).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labkit::client::Client;
use labkit::report::show;
use labkit::server::Server;
use labkit::{Cmd, Report};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const BIN: &str = env!("CARGO_BIN_EXE_https_server");

/// How long a test's own TLS client waits for each read or write.
const DEADLINE: Duration = Duration::from_secs(5);

/// The handshake timeout given to servers in tests where a silent client
/// must not be cut off before the test is over: far beyond any test's
/// deadline.
const LONG_HANDSHAKE_TIMEOUT_MS: &str = "600000";

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// One test's certificates, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    /// The root CA, which only the clients have.
    root: CertificateDer<'static>,
    root_pem: String,
    intermediate: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    /// Leaf then intermediate, PEM.
    cert_path: PathBuf,
    /// The leaf's private key, PKCS#8 PEM.
    key_path: PathBuf,
}

/// A CA's parameters: may sign certificates (`path_len`: how many CAs may
/// follow it in a chain; `None` for any).
fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).expect("no names is valid");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Makes a root, an intermediate and a leaf for `localhost` and
/// `127.0.0.1`, and writes CERT_PEM and KEY_PEM.
fn pki() -> Pki {
    let fail = |e: rcgen::Error| -> ! { panic!("[test] could not make a certificate: {e}") };

    let root_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let root_params = ca_params("lab 17 test root CA", None);
    let root = root_params
        .self_signed(&root_key)
        .unwrap_or_else(|e| fail(e));
    let root_issuer = Issuer::new(root_params, root_key);

    let inter_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let inter_params = ca_params("lab 17 test intermediate CA", Some(0));
    let intermediate = inter_params
        .signed_by(&inter_key, &root_issuer)
        .unwrap_or_else(|e| fail(e));
    let inter_issuer = Issuer::new(inter_params, inter_key);

    let leaf_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap_or_else(|e| fail(e));
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params
        .signed_by(&leaf_key, &inter_issuer)
        .unwrap_or_else(|e| fail(e));

    let dir = tempfile::tempdir().expect("[test] could not make a temporary directory");
    let cert_path = dir.path().join("chain.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), intermediate.pem()))
        .expect("[test] could not write chain.pem");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("[test] could not write key.pem");

    Pki {
        root: root.der().clone(),
        root_pem: root.pem(),
        intermediate: intermediate.der().clone(),
        leaf: leaf.der().clone(),
        cert_path,
        key_path,
        dir,
    }
}

/// A root CA that signed nothing the server has: a client that trusts only
/// this one must reject the server.
fn stranger_root() -> CertificateDer<'static> {
    let key = KeyPair::generate().expect("[test] could not make a key");
    ca_params("a CA the server never heard of", None)
        .self_signed(&key)
        .expect("[test] could not make a certificate")
        .der()
        .clone()
}

// ---------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------

/// `https_server 127.0.0.1:0 chain.pem key.pem <static dir> [extra...]`.
#[track_caller]
fn spawn(pki: &Pki, extra: &[&str]) -> Server {
    Server::builder(BIN)
        .arg(&pki.cert_path)
        .arg(&pki.key_path)
        .arg(pki.dir.path())
        .args(extra)
        .spawn()
}

/// A reqwest client that trusts only the test's root CA and resolves
/// `localhost` to the server.
fn https_client(pki: &Pki, server: &Server) -> reqwest::blocking::Client {
    let root = reqwest::Certificate::from_pem(pki.root_pem.as_bytes())
        .expect("[test] reqwest rejected the root certificate");
    labkit::http::client_builder()
        .tls_certs_only([root])
        .resolve("localhost", server.addr())
        .build()
        .unwrap_or_else(|e| panic!("[test] could not build the HTTPS client: {e}"))
}

/// The hint for a client whose handshake got nowhere.
const HANDSHAKE_HINT: &str = "does each accepted connection get a TLS handshake (TlsAcceptor::accept) with a ServerConfig holding your chain and key, and then HTTP on the TLS stream?";

/// Sends a request with reqwest to `https://localhost:<port><path>` and
/// returns the status, the Content-Type and the body.
#[track_caller]
fn https(
    server: &Server,
    client: &reqwest::blocking::Client,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> (u16, Option<String>, Vec<u8>) {
    let url = format!("https://localhost:{}{path}", server.addr().port());
    let mut request = client.request(method.parse().expect("a valid method"), &url);
    if let Some((content_type, bytes)) = body {
        request = request
            .header("content-type", content_type)
            .body(bytes.to_vec());
    }
    let did = format!("sent {method} {url} (client trusting the test's root CA)");
    // On a helper thread, watched: a parked server fails at once.
    let response = server.watched(&did, move || request.send());
    let response = response.unwrap_or_else(|e| {
        server.expect_alive(&did);
        server
            .report()
            .did(&did)
            .expected("a response over HTTPS")
            .got(labkit::report::error_chain(&e))
            .hint(HANDSHAKE_HINT)
            .fail()
    });
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = response.bytes().unwrap_or_else(|e| {
        server
            .report()
            .did(&did)
            .expected("a whole response body")
            .got(labkit::report::error_chain(&e))
            .fail()
    });
    (status, content_type, bytes.to_vec())
}

/// GETs `/` and checks for `hello, world\n`: the server is alive and
/// serving after whatever the test did before (`did`).
#[track_caller]
fn expect_serves(pki: &Pki, server: &Server, did: &str) {
    server.expect_alive(did);
    let client = https_client(pki, server);
    let (status, _, body) = https(server, &client, "GET", "/", None);
    if status != 200 || body != b"hello, world\n" {
        server
            .report()
            .did(did)
            .did("then sent GET / over HTTPS with a client that trusts the CA")
            .expected("200 with body \"hello, world\\n\"")
            .got(format!("{status} with body {}", show(&body)))
            .hint("after a failed connection, does the server go on serving the others?")
            .fail();
    }
}

/// A rustls client configuration trusting `roots`, offering `alpn`, and
/// speaking the given TLS versions (all that rustls supports when empty).
fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    labkit::http::install_ring();
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .expect("[test] rustls rejected the test's root certificate");
    }
    let builder = if versions.is_empty() {
        ClientConfig::builder()
    } else {
        ClientConfig::builder_with_protocol_versions(versions)
    };
    let mut config = builder.with_root_certificates(store).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects to the server as `localhost` and runs the client side of the
/// handshake to its end, each read and write under [`DEADLINE`]. The error
/// is what the client saw: a rustls error (certificate rejected, alert
/// received) is inside the `io::Error`; see [`tls_error`].
fn handshake(server: &Server, config: Arc<ClientConfig>) -> io::Result<TlsStream> {
    let addr = server.addr();
    // On a helper thread, watched: a server that never reads the
    // ClientHello fails at once instead of at the deadline.
    server.watched("connected and sent a TLS ClientHello", move || {
        handshake_at(addr, config)
    })
}

/// [`handshake`] itself, with the deadlines of a blocking socket.
fn handshake_at(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsStream> {
    let mut tcp = TcpStream::connect_timeout(&addr, DEADLINE)?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    tcp.set_write_timeout(Some(DEADLINE))?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let started = Instant::now();
    while conn.is_handshaking() {
        if started.elapsed() > 2 * DEADLINE {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake did not finish",
            ));
        }
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// The rustls error inside a handshake's `io::Error`, if there is one.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// What a failed handshake looked like, for messages: a timeout says the
/// server never answered.
fn describe_handshake_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "no answer to the ClientHello within {DEADLINE:?} (the server did not run a handshake)"
        ),
        _ => format!("the handshake failed: {}", labkit::report::error_chain(e)),
    }
}

/// The hint for a handshake that failed with `e`: a client that cannot
/// link the leaf to its root ("unknown issuer") points at the chain, other
/// failures get `hint`.
fn chain_hint_or<'a>(e: &io::Error, hint: &'a str) -> &'a str {
    match tls_error(e) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "the client (trusting only the root) could not link your leaf to its root: do you load *every* certificate of CERT_PEM (pem_file_iter), not just the first?"
        }
        _ => hint,
    }
}

/// [`handshake`], failing the test when it fails.
#[track_caller]
fn expect_handshake(
    server: &Server,
    config: Arc<ClientConfig>,
    did: &str,
    hint: &str,
) -> TlsStream {
    handshake(server, config).unwrap_or_else(|e| {
        server.expect_alive(did);
        server
            .report()
            .did(did)
            .expected("a completed TLS handshake")
            .got(describe_handshake_error(&e))
            .hint(chain_hint_or(&e, hint))
            .fail()
    })
}

/// Sends `GET / HTTP/1.1` with `Connection: close` on an established TLS
/// stream and returns what came back, up to the end of `hello, world\n` or
/// the end of the stream.
fn get_root_over(tls: &mut TlsStream) -> Result<Vec<u8>, String> {
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .and_then(|_| tls.flush())
        .map_err(|e| format!("could not send the request: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"hello, world\n") {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // Closed without close_notify after a complete response: fine.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("{e} after {}", show(&got))),
        }
    }
    Ok(got)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// A client that trusts the test's root CA gets `hello, world\n` over HTTPS.
#[test]
fn test_01_serves_hello_world_over_https() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let client = https_client(&pki, &server);
    let (status, content_type, body) = https(&server, &client, "GET", "/", None);
    Report::new("sent GET https://localhost/ (client trusting the test's root CA)")
        .expected("200, Content-Type text/plain; charset=utf-8, body \"hello, world\\n\"")
        .got(format!(
            "{status}, Content-Type {content_type:?}, body {}",
            show(&body)
        ))
        .hint("the routes are those of lab 16: only the transport changes")
        .check(
            status == 200
                && body == b"hello, world\n"
                && content_type.as_deref() == Some("text/plain; charset=utf-8"),
        );
}

// The other routes work over TLS too: a percent-decoded name, and an echo
// of a POST body with its Content-Type, several requests on one client.
#[test]
fn test_02_says_hello_to_a_name_and_echoes_a_post_body() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let client = https_client(&pki, &server);

    let (status, _, body) = https(&server, &client, "GET", "/hello/J%C3%BCrgen", None);
    Report::new("sent GET https://localhost/hello/J%C3%BCrgen")
        .expected("200 with body \"hello, Jürgen\\n\"")
        .got(format!("{status} with body {}", show(&body)))
        .hint("is the name percent-decoded (axum's Path extractor does it)?")
        .check(status == 200 && body == "hello, Jürgen\n".as_bytes());

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (status, content_type, body) = https(
        &server,
        &client,
        "POST",
        "/echo",
        Some(("application/x-test", &payload)),
    );
    Report::new(
        "sent POST https://localhost/echo with 100,000 bytes of Content-Type application/x-test",
    )
    .expected("200, the same Content-Type, and the same 100,000 bytes back")
    .got(format!(
        "{status}, Content-Type {content_type:?}, {} bytes back{}",
        body.len(),
        if body == payload { "" } else { " (different)" }
    ))
    .hint("POST /echo answers the request body byte for byte, with the request's Content-Type")
    .check(
        status == 200 && content_type.as_deref() == Some("application/x-test") && body == payload,
    );

    let (status, _, body) = https(&server, &client, "GET", "/no/such/page", None);
    Report::new("sent GET https://localhost/no/such/page")
        .expected("404")
        .got(format!("{status} with body {}", show(&body)))
        .check(status == 404);
}

// ALPN: a client offering `h2` and `http/1.1` agrees on `http/1.1` inside
// the handshake, and then speaks HTTP/1.1 on that stream.
#[test]
fn test_03_negotiates_http_1_1_with_alpn() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let did = "ran a TLS handshake as `localhost`, offering ALPN [\"h2\", \"http/1.1\"]";
    let config = client_config(std::slice::from_ref(&pki.root), &[b"h2", b"http/1.1"], &[]);
    let mut tls = expect_handshake(&server, config, did, HANDSHAKE_HINT);

    let alpn = tls
        .conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    server
        .report()
        .did(did)
        .expected("the negotiated ALPN protocol to be \"http/1.1\"")
        .got(format!("{alpn:?}"))
        .hint("does the ServerConfig list the protocols it speaks (config.alpn_protocols = vec![b\"http/1.1\".to_vec()])? Without it the server chooses nothing")
        .check(alpn.as_deref() == Some("http/1.1"));

    let got = get_root_over(&mut tls).unwrap_or_else(|e| e.into_bytes());
    server
        .report()
        .did(did)
        .did("sent GET / HTTP/1.1 on the TLS stream")
        .expected("an HTTP/1.1 200 response with body \"hello, world\\n\"")
        .got(show(&got))
        .hint("after the handshake, serve HTTP/1.1 on the TLS stream (hyper's http1 builder)")
        .check(got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"hello, world\n"));
}

// The server sends its whole chain, leaf then intermediate: a client that
// trusts only the root can verify the leaf only through the intermediate.
#[test]
fn test_04_sends_the_whole_chain_leaf_then_intermediate() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let did = "ran a TLS handshake as `localhost` with a client that trusts only the root CA";
    let config = client_config(std::slice::from_ref(&pki.root), &[b"http/1.1"], &[]);
    let tls = handshake(&server, config).unwrap_or_else(|e| {
        server.expect_alive(did);
        server
            .report()
            .did(did)
            .expected("a completed handshake: leaf signed by the intermediate, intermediate signed by the root")
            .got(describe_handshake_error(&e))
            .hint(chain_hint_or(&e, HANDSHAKE_HINT))
            .fail()
    });
    let sent = tls.conn.peer_certificates().unwrap_or_default();
    let names: Vec<&str> = sent
        .iter()
        .map(|c| {
            if *c == pki.leaf {
                "leaf"
            } else if *c == pki.intermediate {
                "intermediate"
            } else if *c == pki.root {
                "root"
            } else {
                "an unknown certificate"
            }
        })
        .collect();
    server
        .report()
        .did(did)
        .expected("the certificates sent to be [leaf, intermediate], in that order")
        .got(format!("{names:?}"))
        .hint("send the chain as CERT_PEM holds it: every certificate, in file order")
        .check(names == ["leaf", "intermediate"]);
}

// TLS 1.3 is the default, and a client that speaks only TLS 1.2 is served
// too.
#[test]
fn test_05_speaks_tls_1_3_and_tls_1_2() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let roots = [pki.root.clone()];
    for (version, label) in [
        (&rustls::version::TLS13, "TLSv1.3"),
        (&rustls::version::TLS12, "TLSv1.2"),
    ] {
        let did = format!("ran a TLS handshake with a client that speaks only {label}");
        let config = client_config(&roots, &[b"http/1.1"], &[version]);
        let mut tls = expect_handshake(
            &server,
            config,
            &did,
            "rustls's ServerConfig::builder() enables TLS 1.3 and 1.2: do you restrict the versions?",
        );
        let got = get_root_over(&mut tls).unwrap_or_else(|e| e.into_bytes());
        server
            .report()
            .did(&did)
            .did("sent GET / HTTP/1.1 on the TLS stream")
            .expected("an HTTP/1.1 200 response with body \"hello, world\\n\"")
            .got(show(&got))
            .check(got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"hello, world\n"));
    }
}

// A client that does not trust the server's CA aborts the handshake with a
// certificate error; the server logs it and serves the next client.
#[test]
fn test_06_a_client_that_does_not_trust_the_ca_fails_and_the_server_keeps_serving() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let did = "ran a TLS handshake with a client that trusts another root CA, not the test's";
    let config = client_config(&[stranger_root()], &[b"http/1.1"], &[]);
    match handshake(&server, config) {
        Ok(_) => server
            .report()
            .did(did)
            .expected("the client to reject the server's certificate")
            .got("a completed handshake")
            .hint("is the server using the certificate from CERT_PEM?")
            .fail(),
        Err(e) => {
            let certificate_error =
                matches!(tls_error(&e), Some(rustls::Error::InvalidCertificate(_)));
            server
                .report()
                .did(did)
                .expected(
                    "the handshake to fail with a certificate error on the client (unknown issuer)",
                )
                .got(describe_handshake_error(&e))
                .hint(HANDSHAKE_HINT)
                .check(certificate_error);
        }
    }
    expect_serves(&pki, &server, did);
}

// Plain HTTP sent to the TLS port: the server drops that connection (it is
// not TLS) and keeps serving TLS clients.
#[test]
fn test_07_survives_plain_http_on_the_tls_port() {
    let pki = pki();
    let server = spawn(&pki, &[]);
    let mut c = Client::connect_to(&server);
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    c.hint("plain HTTP is not a TLS record: the handshake fails at once; do you drop the connection when it does?");
    c.read_until_closed();
    expect_serves(
        &pki,
        &server,
        "sent plain HTTP (GET / HTTP/1.1) to the TLS port, and the server closed it",
    );
}

// A client that connects and never says anything does not hold up another
// client's handshake: each handshake runs in its own task.
#[test]
fn test_08_a_silent_client_does_not_block_another_clients_handshake() {
    let pki = pki();
    let server = spawn(&pki, &["--handshake-timeout-ms", LONG_HANDSHAKE_TIMEOUT_MS]);
    let silent: Vec<Client> = (0..3).map(|_| Client::connect_to(&server)).collect();
    let did = format!(
        "connected {} clients that send nothing (handshake timeout {LONG_HANDSHAKE_TIMEOUT_MS} ms), then ran a handshake with a trusting client",
        silent.len()
    );
    let config = client_config(std::slice::from_ref(&pki.root), &[b"http/1.1"], &[]);
    let mut tls = expect_handshake(
        &server,
        config,
        &did,
        "is the handshake awaited in the accept loop? Then a silent client holds the loop until its timeout: run each handshake in the spawned task",
    );
    let got = get_root_over(&mut tls).unwrap_or_else(|e| e.into_bytes());
    server
        .report()
        .did(&did)
        .did("sent GET / HTTP/1.1 on the TLS stream")
        .expected("an HTTP/1.1 200 response with body \"hello, world\\n\"")
        .got(show(&got))
        .check(got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"hello, world\n"));
    drop(silent);
}

// A client that never completes its handshake is disconnected after
// --handshake-timeout-ms, and the server goes on serving.
#[test]
fn test_09_closes_a_silent_client_after_the_handshake_timeout() {
    let pki = pki();
    let server = spawn(&pki, &["--handshake-timeout-ms", "300"]);
    let mut c = Client::connect_to(&server);
    c.hint("with --handshake-timeout-ms 300, a client that sends nothing must be closed after 300 ms: do you wrap the handshake in tokio::time::timeout and drop the stream when it fires?");
    c.expect_closed();
    expect_serves(
        &pki,
        &server,
        "connected a client that sent nothing, and the server closed it after the handshake timeout",
    );
}

// Unreadable certificate or key files: the server refuses to start, with a
// non-zero exit code and a message naming the file.
#[test]
fn test_10_exits_with_an_error_naming_a_missing_cert_or_key_file() {
    let pki = pki();
    let missing = pki.dir.path().join("no-such-file.pem");
    let cases: [(&str, &Path, &Path); 2] = [
        ("certificate chain", &missing, &pki.key_path),
        ("private key", &pki.cert_path, &missing),
    ];
    for (what, cert, key) in cases {
        let out = Cmd::new(BIN)
            .arg("127.0.0.1:0")
            .arg(cert)
            .arg(key)
            .deadline(DEADLINE)
            .run();
        let stderr = out.stderr_text();
        let named = stderr.contains(&missing.display().to_string());
        out.report()
            .expected(format!(
                "a non-zero exit code, and a line on stderr naming the missing {what} file {}",
                missing.display()
            ))
            .got(format!("{}; named the file: {named}", out.ending()))
            .hint(if out.panicked() {
                "a panic is not an error message: print one line naming the file (e.g. \"cannot load the private key from <path>: <error>\") and exit(1)"
            } else {
                "load the certificate chain and the key before listening; when one cannot be read, print its path and the error to stderr and exit with a non-zero code"
            })
            .check(
                !out.timed_out
                    && out.code.is_some_and(|c| c != 0)
                    && named
                    && !out.panicked(),
            );
    }
}

// The other startup errors the README names: a certificate file that holds no certificate, a
// key file that holds no key, and a key that does not fit the leaf. Each is one line on stderr
// naming a file, a non-zero exit, and never a `listening on` line.
#[test]
fn test_11_exits_with_an_error_for_a_file_without_a_cert_or_key_or_a_key_that_does_not_fit() {
    let pki = pki();
    let stranger = pki.dir.path().join("another-key.pem");
    let other = KeyPair::generate().expect("[test] could not make a key");
    std::fs::write(&stranger, other.serialize_pem())
        .expect("[test] could not write another-key.pem");
    let cases: [(&str, &Path, &Path, &[&Path]); 3] = [
        (
            "a CERT_PEM that holds only a private key (no certificate)",
            &pki.key_path,
            &pki.key_path,
            &[&pki.key_path],
        ),
        (
            "a KEY_PEM that holds only certificates (no key)",
            &pki.cert_path,
            &pki.cert_path,
            &[&pki.cert_path],
        ),
        (
            "a KEY_PEM whose key does not fit the leaf certificate",
            &pki.cert_path,
            &stranger,
            &[&stranger, &pki.cert_path],
        ),
    ];
    for (what, cert, key, names) in cases {
        let out = Cmd::new(BIN)
            .arg("127.0.0.1:0")
            .arg(cert)
            .arg(key)
            .deadline(DEADLINE)
            .run();
        let stderr = out.stderr_text();
        let named = names
            .iter()
            .any(|p| stderr.contains(&p.display().to_string()));
        let listened = out.stdout_text().contains("listening on");
        out.report()
            .did(format!("started the server with {what}"))
            .expected(format!(
                "a non-zero exit code before listening, and a line on stderr naming {}",
                names
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
            .got(format!(
                "{}; named the file: {named}; printed `listening on`: {listened}",
                out.ending()
            ))
            .hint(if out.panicked() {
                "a panic is not an error message: print one line naming the file and exit(1)"
            } else {
                "a file that parses but holds no certificate (or no key) is an error too: check that you got at least one, and let rustls tell you when the key does not fit (with_single_cert returns an error), before you bind"
            })
            .check(
                !out.timed_out
                    && out.code.is_some_and(|c| c != 0)
                    && named
                    && !listened
                    && !out.panicked(),
            );
    }
}
