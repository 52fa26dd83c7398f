//! Loading the server's identity and building its TLS configuration.
//!
//! Two files make a TLS server's identity:
//! - the **certificate chain** (CERT_PEM): the leaf certificate, which names
//!   this server (`localhost`, `127.0.0.1`) and holds its public key,
//!   followed by the intermediate CA certificates that link the leaf to a
//!   root the clients already trust. The root itself is not sent: a client
//!   that does not have it would have no reason to believe it anyway.
//! - the **private key** (KEY_PEM) that matches the leaf's public key. The
//!   server proves it holds this key by signing the handshake transcript
//!   (CertificateVerify); it never leaves the process.
//!
//! Both are PEM: base64 DER between `-----BEGIN ...-----` lines.
//! `rustls-pki-types` parses them; rustls only ever sees DER.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The one protocol we speak on top of TLS. ALPN lets client and server
/// agree on it inside the handshake, so no round trip is spent on it
/// afterwards; a client that offers only `h2` gets a
/// `no_application_protocol` alert instead of a stream it cannot read.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A startup error that names the file at fault, so the one line on stderr
/// tells an operator what to fix.
#[derive(Debug)]
pub struct LoadError {
    path: PathBuf,
    what: &'static str,
    why: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot load the {} from {}: {}",
            self.what,
            self.path.display(),
            self.why
        )
    }
}

/// Reads every certificate in `path`, in file order: leaf first, then the
/// intermediates. Loading only the first one is a classic production bug:
/// browsers often still connect (they cache intermediates, or fetch them),
/// while `curl`, Go and Rust clients fail with "unknown issuer".
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let fail = |why: String| LoadError {
        path: path.to_owned(),
        what: "certificate chain",
        why,
    };
    // Two phases of errors: opening the file, then each PEM section.
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("no CERTIFICATE section in the file".into()));
    }
    Ok(chain)
}

/// Reads the first private key in `path`, whichever of the three PEM
/// flavours it is: `PRIVATE KEY` (PKCS#8, what most tools write today),
/// `EC PRIVATE KEY` (SEC1) or `RSA PRIVATE KEY` (PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| LoadError {
        path: path.to_owned(),
        what: "private key",
        why: e.to_string(),
    })
}

/// The server's TLS configuration: TLS 1.3 and 1.2 (rustls's safe
/// defaults), no client certificates, our chain and key, and ALPN.
///
/// `with_single_cert` also checks that the key matches the leaf's public
/// key, so a mixed-up pair of files fails here, at startup, rather than in
/// every client's handshake.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    // `builder()` uses the process-wide provider that `main` installed
    // (ring); without one it would panic, since the course builds rustls
    // with no default provider.
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}
