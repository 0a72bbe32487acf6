//! A small blocking client of the daemon's Unix socket (what `dualstack --api SOCKET ...` and
//! `dualstack bench api` use): one request per connection, JSON in and out, errors as the
//! daemon's `{"error", "field"}`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach dualstackd at {}: {source} (is `dualstack daemon` running there?)", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {path}: {source}")]
    Io {
        method: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The daemon said no: its message (and the field it names).
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        field: Option<String>,
    },
    #[error("{method} {path}: unexpected answer: {detail}")]
    Answer {
        method: String,
        path: String,
        detail: String,
    },
}

/// One request on a new connection: the status and the (de-chunked) body.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)?;
    send(&mut s, method, path, body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let (status, chunked, body) = split(&raw)?;
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn send(s: &mut UnixStream, method: &str, path: &str, body: Option<&str>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let b = body.unwrap_or("");
    let ct = if body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    )
}

fn bad() -> std::io::Error {
    std::io::Error::other("malformed HTTP response")
}

/// Status, whether the body is chunked, and the body bytes after the head.
fn split(raw: &[u8]) -> std::io::Result<(u16, bool, &[u8])> {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((
        status,
        head.contains("transfer-encoding: chunked"),
        &raw[at + 4..],
    ))
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
        let n = std::str::from_utf8(&rest[..p])
            .ok()
            .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
            .ok_or_else(bad)?;
        if n == 0 || rest.len() < p + 2 + n {
            break;
        }
        out.extend_from_slice(&rest[p + 2..p + 2 + n]);
        rest = &rest[(p + 4 + n).min(rest.len())..];
    }
    Ok(out)
}

/// Stream a chunked (or plain) response body into `out` as it arrives; returns the status.
pub fn stream(socket: &Path, path: &str, out: &mut dyn Write) -> Result<u16, ClientError> {
    let io = |source| ClientError::Io {
        method: "GET".into(),
        path: path.into(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    send(&mut s, "GET", path, None).map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    // The head first.
    let (status, chunked, mut pending) = loop {
        let n = s.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Err(io(bad()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let (st, ch, body) = split(&buf).map_err(io)?;
            break (st, ch, body.to_vec());
        }
    };
    loop {
        if chunked {
            // Emit every complete chunk in `pending`.
            while let Some(p) = pending.windows(2).position(|w| w == b"\r\n") {
                let n = std::str::from_utf8(&pending[..p])
                    .ok()
                    .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
                    .ok_or_else(|| io(bad()))?;
                if n == 0 {
                    return Ok(status);
                }
                if pending.len() < p + 4 + n {
                    break;
                }
                out.write_all(&pending[p + 2..p + 2 + n]).map_err(io)?;
                out.flush().map_err(io)?;
                pending.drain(..p + 4 + n);
            }
        } else {
            out.write_all(&pending).map_err(io)?;
            out.flush().map_err(io)?;
            pending.clear();
        }
        let n = s.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Ok(status);
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// A request whose answer must be one of `want`; the JSON body.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    want: &[u16],
) -> Result<serde_json::Value, ClientError> {
    let (status, bytes) = request(socket, method, path, body).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound
            || source.kind() == std::io::ErrorKind::ConnectionRefused
        {
            ClientError::Connect {
                socket: socket.to_path_buf(),
                source,
            }
        } else {
            ClientError::Io {
                method: method.into(),
                path: path.into(),
                source,
            }
        }
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if want.contains(&status) {
        return Ok(v);
    }
    match v["error"].as_str() {
        Some(m) => Err(ClientError::Refused {
            status,
            message: m.to_string(),
            field: v["field"].as_str().map(str::to_string),
        }),
        None => Err(ClientError::Answer {
            method: method.into(),
            path: path.into(),
            detail: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        }),
    }
}
