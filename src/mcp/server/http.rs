//! `troupe mcp serve --http`: rmcp's streamable HTTP service hosted on hyper 1, in front of it
//! what a server reachable by other processes needs, and the hub that gives each client its
//! session.
//!
//! In front, in this order: only `/mcp` is served; every request carries the bearer token
//! (always: on a loopback address one is generated and printed when none is given, off loopback
//! the user must give one), compared by SHA-256 digest so neither its bytes nor its length show
//! in the time a refusal takes, with the `Bearer` scheme in any case; a POST body is read (at
//! most 4 MiB) and answered with a JSON-RPC parse error (-32700) when it is not JSON, or invalid
//! request (-32600) when it is not a JSON-RPC message. rmcp then checks `Host` and `Origin`
//! (DNS rebinding). Connections: at most 64 open at once (beyond, the listener waits, and the
//! kernel's backlog holds new clients until one closes), headers must arrive within 10 s, and an
//! `accept` error (out of file descriptors) pauses the loop instead of spinning it.
//!
//! The hub: a client that sends `initialize` opens a session of its own (at most 32 at once),
//! closed when rmcp drops the session's handler (a DELETE, or 15 minutes without a request);
//! requests without a session share the sessionless run, closed once idle for 10 minutes.
//! Stopping the server closes every session and waits for their findings.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use rmcp::ErrorData as McpError;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ServeContext, Session, TroupeServer};
use crate::config::Workbench;

/// Connections open at once; beyond, new ones wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's headers (and an idle kept-alive
/// connection to start its next request) before it is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed `accept`: it fails again at once while the process is out of file
/// descriptors, and a loop that retries at once spins a core.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The largest POST body read (rmcp's own limit too).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Sessions of their own open at once: each may hold a run (a run folder, its writer thread).
const MAX_SESSIONS: usize = 32;
/// How long rmcp keeps a session that gets no request: then the client is taken to have left
/// without a DELETE, and its run is finished. Longer than the longest `get_task_status` wait
/// (300 s), so a client waiting on a long subtask keeps its session by polling.
const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
/// How long the sessionless run may sit idle (nothing working, no request in flight) before it
/// is closed; the next sessionless request starts a new one.
const SESSIONLESS_IDLE: Duration = Duration::from_secs(600);
/// How often the hub looks for an idle sessionless run.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// How `troupe mcp serve --http` may be reached.
pub struct HttpOptions {
    pub addr: SocketAddr,
    /// The bearer token every request must carry; generated when `None`.
    pub token: Option<String>,
}

/// Where the server listens, for the caller to tell the user once it is bound.
pub struct Listening<'a> {
    pub addr: SocketAddr,
    /// The token generated for this server (none was given): the user can only learn it here.
    pub generated_token: Option<&'a str>,
}

type Response = http::Response<BoxBody<Bytes, Infallible>>;

/// Serves streamable HTTP at `http://ADDR/mcp` until `stop` is cancelled, then closes every
/// session (their findings written) and returns.
pub async fn serve_http(
    context: ServeContext,
    options: HttpOptions,
    stop: CancellationToken,
    bound: impl FnOnce(&Listening<'_>),
) -> Result<(), String> {
    let HttpOptions { addr, token } = options;
    // Off this machine the token travels in clear over the network: serving there is a choice
    // made with a token of one's own, not a side effect of a generated one.
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "serving on {addr}, which is not a loopback address, needs a bearer token of your own: pass --token-env VAR with the token in VAR"
        ));
    }
    let (token, generated) = match token {
        Some(token) => (token, false),
        None => (generate_token()?, true),
    };
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    let local = listener.local_addr().map_err(|err| format!("cannot read the address listened on: {err}"))?;
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_origins(allowed_origins(local))
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_cancellation_token(stop.child_token());
    config = if local.ip().is_loopback() {
        config.with_allowed_hosts(["localhost", "127.0.0.1", "::1"])
    } else {
        // Any Host may reach a public address; the token is what admits a request.
        config.disable_allowed_hosts()
    };
    let (closing, closed) = mpsc::unbounded_channel();
    let hub = Arc::new(Hub { context, state: Mutex::default(), closing });
    let closer = tokio::spawn(run_closer(hub.clone(), closed, stop.clone()));
    let factory = hub.clone();
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(SESSION_IDLE);
    let service = Arc::new(StreamableHttpService::new(
        move || Ok(TroupeServer::http(factory.clone())),
        Arc::new(sessions),
        config,
    ));
    bound(&Listening { addr: local, generated_token: generated.then_some(token.as_str()) });
    let token = Arc::new(Token::new(&token));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; were it, no connection could be served.
                Err(err) => return Err(format!("the connection limit stopped working: {err}")),
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("accepting a connection failed: {err}");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                    }
                }
            },
        };
        let (service, token) = (service.clone(), token.clone());
        tokio::spawn(async move {
            // Held for the connection's life: what the connection cap counts.
            let _permit = permit;
            let handler = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (service, token) = (service.clone(), token.clone());
                async move { Ok::<_, Infallible>(answer(request, &service, &token).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(err) = builder.serve_connection(io, handler).await {
                tracing::debug!("an MCP HTTP connection ended: {err}");
            }
        });
    }
    // The closer saw `stop` too: it closes every session left and ends once all are written.
    closer.await.map_err(|err| format!("closing the sessions stopped: {err}"))
}

/// One request, through the checks in front of rmcp.
async fn answer(
    request: http::Request<hyper::body::Incoming>,
    service: &StreamableHttpService<TroupeServer, LocalSessionManager>,
    token: &Token,
) -> Response {
    if request.uri().path() != "/mcp" {
        return plain(http::StatusCode::NOT_FOUND, "troupe serves MCP at /mcp\n");
    }
    if !token.admits(request.headers().get(http::header::AUTHORIZATION)) {
        let mut response = plain(http::StatusCode::UNAUTHORIZED, "a bearer token is required\n");
        response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return response;
    }
    if request.method() != http::Method::POST {
        return service.handle(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return plain(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than troupe reads (4 MiB)\n",
            );
        }
        Err(err) => {
            return plain(http::StatusCode::BAD_REQUEST, &format!("the request body could not be read: {err}\n"));
        }
    };
    if let Some((code, message)) = malformed(&body) {
        return jsonrpc_error(code, &message);
    }
    service.handle(http::Request::from_parts(parts, Full::new(body))).await
}

/// What is wrong with a POST body as JSON-RPC: not JSON (parse error, -32700), or JSON that is
/// not a JSON-RPC message (invalid request, -32600); `None` when rmcp can take it.
fn malformed(body: &[u8]) -> Option<(i64, String)> {
    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Some((-32700, format!("Parse error: the body is not JSON ({err})")));
    }
    // The type rmcp reads a body as: what passes here, rmcp accepts.
    match serde_json::from_slice::<rmcp::model::ClientJsonRpcMessage>(body) {
        Ok(_) => None,
        Err(err) => Some((-32600, format!("Invalid Request: the body is not a JSON-RPC message ({err})"))),
    }
}

/// A JSON-RPC error as JSON-RPC over HTTP answers a body it cannot take: status 400, `id` null.
fn jsonrpc_error(code: i64, message: &str) -> Response {
    let error = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    let mut response = http::Response::new(Full::new(Bytes::from(error.to_string())).boxed());
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn plain(status: http::StatusCode, text: &str) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from(text.to_owned())).boxed());
    *response.status_mut() = status;
    response
}

/// The expected bearer token, kept as its digest only.
struct Token {
    digest: [u8; 32],
}

impl Token {
    fn new(secret: &str) -> Token {
        Token { digest: Sha256::digest(secret.as_bytes()).into() }
    }

    /// Whether an `Authorization` header carries the token. The given token's digest is
    /// compared, in a time that depends on neither where the digests first differ nor the given
    /// token's length, so a token cannot be learned a byte (or a length) at a time.
    fn admits(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(given) = header.and_then(|value| bearer(value.as_bytes())) else { return false };
        let digest: [u8; 32] = Sha256::digest(given).into();
        digest.iter().zip(&self.digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The credentials of a `Bearer` authorization, the scheme in any case (RFC 9110 §11.1).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let at = header.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (scheme, rest) = header.split_at(at);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let end = rest.iter().rposition(|b| *b != b' ' && *b != b'\t')?;
    Some(&rest[start..=end])
}

/// A token of 256 random bits from the kernel, in hex.
fn generate_token() -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).map_err(|err| {
        format!("cannot generate a bearer token ({err}): pass --token-env VAR with a token of your own in VAR")
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The Origins a browser may send: pages served from the loopback addresses, and from `addr`.
fn allowed_origins(addr: SocketAddr) -> Vec<String> {
    let mut origins: Vec<String> =
        ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"].iter().map(|o| (*o).to_owned()).collect();
    if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
        origins.push(format!("http://{addr}"));
    }
    origins
}

/// Which session each request of the server belongs to, and the closing of sessions.
pub(super) struct Hub {
    context: ServeContext,
    state: Mutex<HubState>,
    /// Sessions whose client left, to the closer.
    closing: mpsc::UnboundedSender<Arc<Session>>,
}

#[derive(Default)]
struct HubState {
    /// The sessions of clients that initialized, until their close is done: what the cap
    /// counts and a stop closes.
    sessions: Vec<Arc<Session>>,
    /// The run requests without a session share, and when a request last asked for it.
    sessionless: Option<(Arc<Session>, Instant)>,
}

impl Hub {
    pub(super) fn workbench(&self) -> &Workbench {
        &self.context.workbench
    }

    pub(super) fn closing(&self) -> mpsc::UnboundedSender<Arc<Session>> {
        self.closing.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for a client that initialized, unless too many are open.
    pub(super) fn open_session(&self) -> Result<Arc<Session>, McpError> {
        let mut state = self.state();
        if state.sessions.len() >= MAX_SESSIONS {
            return Err(McpError::invalid_request(
                format!("troupe serves at most {MAX_SESSIONS} sessions at once: end one (HTTP DELETE) and try again"),
                None,
            ));
        }
        let session = Session::new(self.context.clone());
        state.sessions.push(session.clone());
        Ok(session)
    }

    /// The sessionless run's session, made if there is none.
    pub(super) fn sessionless(&self) -> Arc<Session> {
        let mut state = self.state();
        let now = Instant::now();
        match &mut state.sessionless {
            Some((session, used)) => {
                *used = now;
                session.clone()
            }
            None => {
                let session = Session::new(self.context.clone());
                state.sessionless = Some((session.clone(), now));
                session
            }
        }
    }

    /// The sessionless session, taken out if it is idle. Under the hub's lock, which every
    /// request takes to get it, so none can get it between the check and the taking.
    fn take_idle_sessionless(&self, now: Instant) -> Option<Arc<Session>> {
        let mut state = self.state();
        let (session, used) = state.sessionless.as_ref()?;
        // The hub's is the only reference: no request, listener or MCP task holds it.
        let in_flight = Arc::strong_count(session) > 1;
        if !idle(now.saturating_duration_since(*used), in_flight, session.busy()) {
            return None;
        }
        state.sessionless.take().map(|(session, _)| session)
    }

    fn forget(&self, session: &Arc<Session>) {
        self.state().sessions.retain(|open| !Arc::ptr_eq(open, session));
    }

    /// Every session, for the server's stop.
    fn take_all(&self) -> Vec<Arc<Session>> {
        let mut state = self.state();
        let mut all: Vec<Arc<Session>> = state.sessions.clone();
        all.extend(state.sessionless.take().map(|(session, _)| session));
        all
    }
}

/// Whether the sessionless run may be closed: nothing in flight, nothing working, and no
/// request for [`SESSIONLESS_IDLE`].
fn idle(unused_for: Duration, in_flight: bool, busy: bool) -> bool {
    !in_flight && !busy && unused_for >= SESSIONLESS_IDLE
}

/// Closes the sessions whose clients left and the sessionless run once idle; at `stop`, every
/// session, and returns once all are written.
async fn run_closer(hub: Arc<Hub>, mut closed: mpsc::UnboundedReceiver<Arc<Session>>, stop: CancellationToken) {
    let mut closes = JoinSet::new();
    let mut reap = tokio::time::interval(REAP_EVERY);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(session) = closed.recv() => {
                closes.spawn(close(hub.clone(), session));
            }
            _ = reap.tick() => {
                if let Some(session) = hub.take_idle_sessionless(Instant::now()) {
                    closes.spawn(close(hub.clone(), session));
                }
            }
            // Reaps finished closes, so the set holds only those in progress.
            Some(_) = closes.join_next(), if !closes.is_empty() => {}
        }
    }
    for session in hub.take_all() {
        closes.spawn(close(hub.clone(), session));
    }
    while closes.join_next().await.is_some() {}
}

async fn close(hub: Arc<Hub>, session: Arc<Session>) {
    let dir = session.close().await;
    hub.forget(&session);
    if let Some(dir) = dir {
        (hub.context.status)(&format!("session ended: its run is in {}", dir.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_read_with_the_scheme_in_any_case() {
        let cases: [(&[u8], Option<&[u8]>); 8] = [
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER  abc  ", Some(b"abc")),
            (b"Bearer\tabc", Some(b"abc")),
            (b"Basic abc", None),
            (b"Bearerabc", None),
            (b"Bearer ", None),
            (b"abc", None),
        ];
        for (header, expected) in cases {
            assert_eq!(bearer(header), expected, "{}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn only_the_token_itself_is_admitted() {
        let token = Token::new("s3cret-token");
        let header = |text: &str| Some(http::HeaderValue::from_str(text).unwrap());
        assert!(token.admits(header("Bearer s3cret-token").as_ref()));
        assert!(token.admits(header("bearer s3cret-token").as_ref()));
        assert!(!token.admits(header("Bearer s3cret-tokeN").as_ref()), "same length, one byte off");
        assert!(!token.admits(header("Bearer s3cret").as_ref()), "a prefix");
        assert!(!token.admits(header("Bearer s3cret-token-and-more").as_ref()), "longer");
        assert!(!token.admits(header("s3cret-token").as_ref()), "no scheme");
        assert!(!token.admits(None));
    }

    #[test]
    fn generated_tokens_are_long_and_differ() {
        let (a, b) = (generate_token().unwrap(), generate_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_sessionless_run_is_idle_only_when_nothing_holds_or_works_in_it_for_long_enough() {
        let long = SESSIONLESS_IDLE;
        let short = SESSIONLESS_IDLE - Duration::from_secs(1);
        // (unused for, a request or listener holds it, a subtask works) → idle
        let cases = [
            (long, false, false, true),
            (short, false, false, false),
            (long, true, false, false),
            (long, false, true, false),
        ];
        for (unused_for, in_flight, busy, expected) in cases {
            assert_eq!(idle(unused_for, in_flight, busy), expected, "{unused_for:?} {in_flight} {busy}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_a_parse_error_and_one_that_is_not_json_rpc_an_invalid_request() {
        let code = |body: &[u8]| malformed(body).map(|(code, _)| code);
        assert_eq!(code(b"{\"jsonrpc\": \"2.0\", "), Some(-32700));
        assert_eq!(code(b"not json"), Some(-32700));
        assert_eq!(code(b""), Some(-32700));
        assert_eq!(code(b"{\"hello\": 1}"), Some(-32600));
        assert_eq!(code(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), None, "a JSON-RPC message goes on to rmcp");
    }
}
