//! The hello service: from a [`Request`] to a [`Response`].
//!
//! Routing is a `match` on the path: four routes do not need a router.
//! Each route knows its methods, so a known path with another method gets
//! 405 and an `Allow` header, and HEAD is served by the GET handler (the
//! connection then drops the body when it writes the response, keeping
//! Content-Length: see `main.rs`).
//!
//! The static handler is where the security lives: see [`resolve`].

use std::path::{Path, PathBuf};

use crate::parse::Request;

const TEXT: &str = "text/plain; charset=utf-8";

/// One response, before it is written. `Content-Length` (and
/// `Connection`) are added when it is written.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, TEXT, body.into())
    }

    /// A plain-text error: the status and its reason, e.g. `404 Not Found`.
    pub fn error(status: u16) -> Response {
        Response::text(status, format!("{status} {}\n", reason(status)))
    }

    fn method_not_allowed(allow: &str) -> Response {
        let mut r = Response::error(405);
        r.headers.push(("Allow", allow.to_string()));
        r
    }
}

/// The reason phrase for a status (clients ignore it; people read it).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Answers one request. `root` is the static directory.
pub fn handle(req: &Request, root: &Path) -> Response {
    // The query string is not part of the path.
    let path = req.target.split('?').next().unwrap_or_default();
    let get = matches!(req.method.as_str(), "GET" | "HEAD");

    if path == "/" {
        return if get {
            Response::text(200, "hello, world\n")
        } else {
            Response::method_not_allowed("GET, HEAD")
        };
    }
    if let Some(name) = path.strip_prefix("/hello/") {
        // One non-empty segment: `/hello/` and `/hello/a/b` are no route.
        if name.is_empty() || name.contains('/') {
            return Response::error(404);
        }
        if !get {
            return Response::method_not_allowed("GET, HEAD");
        }
        return match percent_decode(name).map(String::from_utf8) {
            Some(Ok(name)) => Response::text(200, format!("hello, {name}\n")),
            // A bad escape (`%zz`) or bytes that are not UTF-8.
            _ => Response::error(400),
        };
    }
    if path == "/echo" {
        if req.method != "POST" {
            return Response::method_not_allowed("POST");
        }
        let content_type = req
            .header("content-type")
            .unwrap_or("application/octet-stream");
        return Response::new(200, content_type, req.body.clone());
    }
    if let Some(rest) = path.strip_prefix("/static/") {
        if !get {
            return Response::method_not_allowed("GET, HEAD");
        }
        return serve_file(root, rest);
    }
    Response::error(404)
}

/// `GET /static/<rest>`.
fn serve_file(root: &Path, rest: &str) -> Response {
    let Some(path) = resolve(root, rest) else {
        // A traversal attempt looks exactly like a missing file: no hint
        // to the prober about what exists outside.
        return Response::error(404);
    };
    // `read` fails on a directory (EISDIR) and a missing file alike: 404.
    // Reading the whole file is fine for a teaching server; a production
    // one streams it (sendfile) and supports Range and caching headers.
    match std::fs::read(&path) {
        Ok(bytes) => Response::new(200, content_type(&path), bytes),
        Err(_) => Response::error(404),
    }
}

/// Maps the raw (still percent-encoded) path after `/static/` to a file
/// under `root`, or `None` if it could leave `root`.
///
/// The order matters: decode each segment first, then check it. A check
/// on the raw path sees `%2e%2e` and `..%2fsecret` as harmless names, and
/// the decoding that follows turns them into `..` and `../secret`. Each
/// decoded segment must be a plain name: not empty (that would make
/// `//etc/passwd` an absolute path), not `.` or `..`, and with no `/` or
/// `\` in it (an encoded slash would smuggle in a second segment).
fn resolve(root: &Path, rest: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for raw in rest.split('/') {
        let segment = String::from_utf8(percent_decode(raw)?).ok()?;
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.contains(['/', '\\', '\0'])
        {
            return None;
        }
        path.push(segment);
    }
    Some(path)
}

/// Decodes `%XX` escapes; `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The Content-Type for a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("txt") => TEXT,
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_every_way_out() {
        let root = Path::new("/srv/public");
        assert_eq!(
            resolve(root, "a%20b/c.txt"),
            Some(PathBuf::from("/srv/public/a b/c.txt"))
        );
        for evil in [
            "../x",
            "%2e%2e/x",
            "%2E%2E%2fx",
            "..%2fx",
            "a/../../x",
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "..%5cx",
            "./x",
        ] {
            assert_eq!(resolve(root, evil), None, "{evil}");
        }
    }

    #[test]
    fn percent_decode_rejects_bad_escapes() {
        assert_eq!(percent_decode("J%C3%BCrgen").unwrap(), "Jürgen".as_bytes());
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
