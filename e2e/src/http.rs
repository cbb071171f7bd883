//! The tests' one HTTP client: a request over a fresh TCP connection, answered in full
//! (`Connection: close`), with connect and read timeouts. Enough for metrics endpoints,
//! readiness probes and REST APIs such as Kafka Connect's; no library needed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// How long connecting and each read may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A response: its status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body of a 2xx response; an error naming the status and body otherwise.
    pub fn ok(self) -> Result<String> {
        if !(200..300).contains(&self.status) {
            bail!("HTTP {}: {}", self.status, self.body);
        }
        Ok(self.body)
    }
}

/// Sends `method path` to `address` (`host:port`), with a JSON `body` when given.
pub fn request(address: &str, method: &str, path: &str, body: Option<&str>) -> Result<Response> {
    let socket: SocketAddr = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .with_context(|| format!("{address} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&socket, TIMEOUT)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.unwrap_or_default().as_bytes()))
        .with_context(|| format!("sending {method} {path} to {address}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer to {method} {path} from {address}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path} on {address}: no header/body separator"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("{method} {path} on {address}: no status code in {head:?}"))?;
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Response { status, body })
}

/// GETs `path` and returns the body of a 2xx answer.
pub fn get(address: &str, path: &str) -> Result<String> {
    request(address, "GET", path, None)?
        .ok()
        .with_context(|| format!("GET {path} on {address}"))
}

/// Joins the chunks of a chunked body.
fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after.get(..size).context("a chunk shorter than its size")?;
        body.push_str(chunk);
        rest = after
            .get(size..)
            .unwrap_or_default()
            .trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("4\r\nWiki\r\n7\r\npedia i\r\n0\r\n\r\n")
                .ok()
                .as_deref(),
            Some("Wikipedia i")
        );
        assert!(dechunk("z\r\n").is_err());
    }
}
