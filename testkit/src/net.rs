//! Ports on loopback. A test that can hand a component a bound listener does so: the port
//! is never free between choosing and binding it. A component that binds its own port
//! (Pingora, a spawned process given `--listen 127.0.0.1:PORT`) gets a port that was free
//! a moment ago, and its start is retried when another process took it in between.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

/// How many times a start that found its port taken is tried again, each time on new ports.
pub const ADDR_IN_USE_ATTEMPTS: usize = 5;

/// A listener on 127.0.0.1, on any free port, bound now: keep it open and pass it on.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// [`listener`] for tokio.
pub async fn tokio_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// A port on 127.0.0.1 that was free a moment ago, for a component that binds it itself.
/// Start that component with [`retry_addr_in_use`] (or its async form): another process
/// may take the port before the component binds it.
pub fn free_addr() -> SocketAddr {
    listener().local_addr().expect("local address")
}

/// Whether a start failure's message says its port was taken.
pub fn is_addr_in_use(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("address already in use")
        || message.contains("address in use")
        || message.contains("addrinuse")
}

/// Runs `start` (which picks its ports with [`free_addr`]) until it succeeds; a failure that
/// says "address in use" is retried up to [`ADDR_IN_USE_ATTEMPTS`] times, any other fails the
/// test with its message.
pub fn retry_addr_in_use<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut attempt = 1;
    loop {
        match start() {
            Ok(started) => return started,
            Err(e) => attempt = next_attempt(what, attempt, &e),
        }
    }
}

/// [`retry_addr_in_use`] for an asynchronous start.
pub async fn retry_addr_in_use_async<T, F, Fut>(what: &str, mut start: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Ok(started) => return started,
            Err(e) => attempt = next_attempt(what, attempt, &e),
        }
    }
}

/// The next attempt's number after `attempt` failed with `error`, or the test's failure.
fn next_attempt(what: &str, attempt: usize, error: &str) -> usize {
    assert!(
        is_addr_in_use(error) && attempt < ADDR_IN_USE_ATTEMPTS,
        "{what} did not start (attempt {attempt}): {error}"
    );
    attempt + 1
}

/// A plain-HTTP/1.1 `GET path` on `addr` (a management port): the status and the body, or
/// `None` when nothing answers within a few seconds.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
