//! The HTTP side of the MCP client: rmcp's streamable HTTP transport over the reqwest 0.12 that
//! troupe already uses for remote models. rmcp's own reqwest client needs reqwest 0.13 (and,
//! with TLS, aws-lc-rs: minutes of C build on two cores); implementing its small
//! `StreamableHttpClient` trait here costs about a hundred lines and no new build.
//!
//! What the trait asks: POST a JSON-RPC message (the answer is `202`, a JSON message, or an SSE
//! stream), GET the server's own SSE stream, DELETE a session. Status codes map to rmcp's
//! errors so its transport can react (an expired session, no SSE, a server error).
//!
//! Invariant: bounded. A JSON body is read chunk by chunk and refused past [`MAX_BODY_BYTES`];
//! an SSE event (its lines since the last blank line) is refused past [`MAX_EVENT_BYTES`]
//! before `sse-stream` (which buffers without limit) sees it. Nothing a server sends can grow
//! troupe's memory without bound. A refused answer to a request becomes a JSON-RPC error for
//! that request ([`too_large_answer`]): the call fails saying why, and the connection, which
//! did nothing wrong, stays up (an error from the client would make rmcp close it, and the call
//! would read as if the server had exited).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use http::{HeaderName, HeaderValue, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ErrorData, JsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};

const SESSION_ID: &str = "Mcp-Session-Id";
const LAST_EVENT_ID: &str = "Last-Event-Id";
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";

/// The largest JSON response read: well above any tool result a model can use (troupe cuts
/// those to `max_tool_result_bytes`), with room for an image or two.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The largest SSE event read (a JSON-RPC message on a stream), for the same reason.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// A reqwest 0.12 client speaking MCP's streamable HTTP.
#[derive(Clone, Debug)]
pub struct McpHttpClient(pub reqwest::Client);

type Failure = StreamableHttpError<reqwest::Error>;
type Events = futures_util::stream::BoxStream<'static, Result<Sse, SseError>>;

fn client_error(err: reqwest::Error) -> Failure {
    StreamableHttpError::Client(err)
}

fn with_common(
    mut request: reqwest::RequestBuilder,
    session: Option<&str>,
    auth: Option<String>,
    headers: HashMap<HeaderName, HeaderValue>,
) -> reqwest::RequestBuilder {
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    if let Some(session) = session {
        request = request.header(SESSION_ID, session);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// The error an unsuccessful status stands for (after the cases each call handles itself).
fn status_failure(response: &reqwest::Response) -> Failure {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        let header = response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Bearer")
            .to_owned();
        return StreamableHttpError::AuthRequired(AuthRequiredError::new(header));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after =
            response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        return StreamableHttpError::HttpStatus(HttpStatusError::new(status.as_u16(), retry_after));
    }
    StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!("HTTP {status}")))
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase)
}

/// The response's events, each refused past `max_event` bytes: the stream then yields the
/// refusal and ends, and the response is dropped at once, so the server stops sending. On the
/// stream answering `request`, the refusal is that request's error answer instead.
fn events(response: reqwest::Response, max_event: usize, request: Option<RequestId>) -> Events {
    let start = Some((response.bytes_stream().boxed(), EventLimit::new(max_event)));
    let limited = futures_util::stream::unfold(start, |state| async move {
        let (mut body, mut limit) = state?;
        let failure = match body.next().await? {
            Ok(bytes) => match limit.observe(&bytes) {
                Ok(()) => return Some((Ok(bytes), Some((body, limit)))),
                Err(refused) => std::io::Error::other(refused),
            },
            Err(err) => std::io::Error::other(err),
        };
        Some((Err(failure), None))
    });
    let events = SseStream::from_bytes_stream(limited);
    let Some(request) = request else { return events.boxed() };
    let answer = serde_json::to_string(&too_large_answer(request, max_event)).unwrap_or_default();
    events
        .map(move |event| match event {
            Err(err) if is_too_large(&err) => Ok(Sse::default().data(answer.clone())),
            other => other,
        })
        .boxed()
}

/// Marks a JSON-RPC error troupe made up for a refused answer (its `data`), so that the call's
/// failure says what happened rather than that the server refused the call.
pub const REFUSED_MARK: &str = "troupe_refused";

/// The error standing for `request`'s answer when it was larger than troupe reads.
fn too_large_answer(request: RequestId, limit: usize) -> ServerJsonRpcMessage {
    let message = format!("its answer is larger than {} MiB, more than troupe reads, and was dropped", limit >> 20);
    let data = serde_json::json!({ REFUSED_MARK: "too_large" });
    ServerJsonRpcMessage::error(ErrorData::internal_error(message, Some(data)), Some(request))
}

/// Whether `err` is the limit's refusal of an event (not a broken connection).
fn is_too_large(err: &SseError) -> bool {
    let SseError::Body(source) = err else { return false };
    source
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| inner.downcast_ref::<EventTooLarge>().is_some())
}

/// An SSE event larger than the client reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event from the MCP server is larger than {} MiB (the server never ended it)", .limit / (1024 * 1024))]
pub struct EventTooLarge {
    pub limit: usize,
}

/// Counts the bytes of the SSE event being received (its lines since the last blank line,
/// each line break counted as one byte), across chunks; pure.
#[derive(Debug)]
struct EventLimit {
    limit: usize,
    /// Bytes of the event so far.
    size: usize,
    /// The last byte seen ended a line (so a line break now would be a blank line).
    at_line_start: bool,
    /// The last byte seen was `\r`: a `\n` now belongs to the same line break.
    after_cr: bool,
}

impl EventLimit {
    fn new(limit: usize) -> Self {
        EventLimit { limit, size: 0, at_line_start: true, after_cr: false }
    }

    fn observe(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' if self.at_line_start => self.size = 0,
                b'\n' | b'\r' => {
                    self.at_line_start = true;
                    self.size += 1;
                }
                _ => {
                    self.at_line_start = false;
                    self.size += 1;
                }
            }
            if self.size > self.limit {
                return Err(EventTooLarge { limit: self.limit });
            }
        }
        Ok(())
    }
}

/// The whole body, read piece by piece, refused as soon as it passes `limit` bytes (at once
/// when its `Content-Length` says it will).
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Failure> {
    let too_large = || StreamableHttpError::ResponseBodyTooLarge { max_size: limit };
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(client_error)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl StreamableHttpClient for McpHttpClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let answering = match &message {
            JsonRpcMessage::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        let request = self.0.post(uri.as_ref()).header(http::header::ACCEPT, format!("{EVENT_STREAM}, {JSON}"));
        let request = with_common(request, session_id.as_deref(), auth_header, custom_headers);
        let body = serde_json::to_vec(&message).map_err(StreamableHttpError::Deserialize)?;
        let request = request.header(http::header::CONTENT_TYPE, JSON).body(body);
        let response = request.send().await.map_err(client_error)?;
        let status = response.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        let session = response.headers().get(SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // A body too large to read is the request's error answer, when it answers one.
        let refused = |err: Failure, session: Option<String>| match (err, answering.clone()) {
            (StreamableHttpError::ResponseBodyTooLarge { max_size }, Some(id)) => {
                Ok(StreamableHttpPostResponse::Json(too_large_answer(id, max_size), session))
            }
            (err, _) => Err(err),
        };
        let kind = content_type(&response);
        let is_json = kind.as_deref().is_some_and(|k| k.starts_with(JSON));
        if !status.is_success() {
            // A JSON-RPC error sent with an error status is still the server's answer.
            if is_json && status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                let failure = status_failure(&response);
                let body = match read_body(response, MAX_BODY_BYTES).await {
                    Ok(body) => body,
                    Err(err) => return refused(err, session),
                };
                return match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(message) => Ok(StreamableHttpPostResponse::Json(message, session)),
                    Err(_) => Err(failure),
                };
            }
            return Err(status_failure(&response));
        }
        match kind.as_deref() {
            Some(k) if k.starts_with(EVENT_STREAM) => {
                Ok(StreamableHttpPostResponse::Sse(events(response, MAX_EVENT_BYTES, answering), session))
            }
            Some(k) if k.starts_with(JSON) => {
                let body = match read_body(response, MAX_BODY_BYTES).await {
                    Ok(body) => body,
                    Err(err) => return refused(err, session),
                };
                if body.is_empty() {
                    return Ok(StreamableHttpPostResponse::Accepted);
                }
                let message = serde_json::from_slice(&body).map_err(StreamableHttpError::Deserialize)?;
                Ok(StreamableHttpPostResponse::Json(message, session))
            }
            _ if response.content_length() == Some(0) => Ok(StreamableHttpPostResponse::Accepted),
            other => Err(StreamableHttpError::UnexpectedContentType(other.map(str::to_owned))),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Failure> {
        let request = with_common(self.0.delete(uri.as_ref()), Some(&session_id), auth_header, custom_headers);
        let response = request.send().await.map_err(client_error)?;
        if response.status().is_success() || response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        Err(status_failure(&response))
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<Events, Failure> {
        let mut request = self.0.get(uri.as_ref()).header(http::header::ACCEPT, format!("{EVENT_STREAM}, {JSON}"));
        if let Some(id) = last_event_id {
            request = request.header(LAST_EVENT_ID, id);
        }
        let request = with_common(request, session_id.as_deref(), auth_header, custom_headers);
        let response = request.send().await.map_err(client_error)?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if !response.status().is_success() {
            return Err(status_failure(&response));
        }
        match content_type(&response) {
            Some(k) if k.starts_with(EVENT_STREAM) || k.starts_with(JSON) => {
                Ok(events(response, MAX_EVENT_BYTES, None))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientRequest, NumberOrString};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Feeds `stream` in pieces of `piece` bytes; where the limit refused it, if it did.
    fn refused_at(limit: usize, stream: &[u8], piece: usize) -> Option<usize> {
        let mut guard = EventLimit::new(limit);
        let mut fed = 0;
        for chunk in stream.chunks(piece) {
            if guard.observe(chunk).is_err() {
                return Some(fed);
            }
            fed += chunk.len();
        }
        None
    }

    #[test]
    fn an_event_is_counted_until_its_blank_line_in_every_line_ending() {
        let table: &[(&[u8], usize, bool)] = &[
            // `data: 1234` and its line break: 11 bytes.
            (b"data: 1234\n\n", 11, false),
            (b"data: 1234\n\n", 10, true),
            (b"data: 1234\r\n\r\n", 11, false),
            (b"data: 1234\r\rdata: 5678\r\r", 11, false),
            // Two events of 11: the blank line starts the count again.
            (b"data: 1234\n\ndata: 5678\n\n", 11, false),
            // Lines without a blank line between add up.
            (b"data: 1234\ndata: 5678\n", 21, true),
            (b"data: 1234\ndata: 5678\n", 22, false),
            (b"data: 1234\r\ndata: 5678\r\n", 21, true),
        ];
        for (stream, limit, refused) in table {
            for piece in [1, 2, 5, stream.len()] {
                let got = refused_at(*limit, stream, piece).is_some();
                assert_eq!(
                    got,
                    *refused,
                    "{} with limit {limit} in pieces of {piece}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    /// Answers one request on a local port with `head` and then `body`, repeated `repeat` times
    /// while the client reads; returns the URL and the bytes of body written before the client
    /// left.
    async fn serve_once(head: String, body: Vec<u8>, repeat: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // The request's head and its short JSON body arrive before any answer is needed.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = socket.read(&mut buffer).await.unwrap();
                if read == 0 {
                    return 0;
                }
                request.extend_from_slice(&buffer[..read]);
            }
            let mut written = 0;
            if socket.write_all(head.as_bytes()).await.is_err() {
                return written;
            }
            for _ in 0..repeat {
                if socket.write_all(&body).await.is_err() {
                    break;
                }
                written += body.len();
            }
            let _ = socket.shutdown().await;
            written
        });
        (url, served)
    }

    async fn ping(url: &str) -> Result<StreamableHttpPostResponse, Failure> {
        let message =
            ClientJsonRpcMessage::request(ClientRequest::PingRequest(Default::default()), NumberOrString::Number(1));
        McpHttpClient(reqwest::Client::new()).post_message(Arc::from(url), message, None, None, HashMap::new()).await
    }

    /// The answer to the ping is troupe's own error saying it was too large.
    fn assert_refused(answer: Result<StreamableHttpPostResponse, Failure>) {
        let Ok(StreamableHttpPostResponse::Json(JsonRpcMessage::Error(error), _)) = answer else {
            panic!("an error answer was expected: {answer:?}");
        };
        assert_eq!(error.id, Some(NumberOrString::Number(1)), "it answers the request");
        assert_eq!(error.error.message, "its answer is larger than 8 MiB, more than troupe reads, and was dropped");
        assert_eq!(error.error.data, Some(serde_json::json!({REFUSED_MARK: "too_large"})));
    }

    #[tokio::test]
    async fn a_json_body_over_the_limit_is_refused_by_its_length_or_as_it_grows() {
        let huge = MAX_BODY_BYTES + 1;
        // Announced by `Content-Length`: refused before a byte of it is read.
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {huge}\r\n\r\n");
        let (url, _server) = serve_once(head, vec![b' '; 64 * 1024], huge / (64 * 1024) + 1).await;
        assert_refused(ping(&url).await);
        // Chunked, with no length: refused once it passes the limit, not at its end.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned();
        let piece = 64 * 1024;
        let mut chunk = format!("{piece:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b' ', piece));
        chunk.extend_from_slice(b"\r\n");
        let (url, server) = serve_once(head, chunk, 1024).await;
        assert_refused(ping(&url).await);
        let written = server.await.unwrap();
        assert!(written < 64 * 1024 * 1024, "the client stopped reading: the server wrote {written} bytes");
    }

    #[tokio::test]
    async fn an_endless_sse_event_ends_the_stream_with_an_error() {
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_owned();
        // Chunks of `x` without a line break: one endless line, up to 64 MiB.
        let piece = 64 * 1024;
        let mut body = format!("{piece:x}\r\n").into_bytes();
        body.extend(std::iter::repeat_n(b'x', piece));
        body.extend_from_slice(b"\r\n");
        let (url, server) = serve_once(head, body, 1024).await;
        let Ok(StreamableHttpPostResponse::Sse(mut events, _)) = ping(&url).await else {
            panic!("an SSE answer was expected");
        };
        let mut items = Vec::new();
        while let Some(item) = events.next().await {
            items.push(item.map_err(|err| err.to_string()));
        }
        drop(events);
        assert_eq!(items.len(), 1, "one answer, then the stream ends: {items:?}");
        let data = items.remove(0).unwrap().data.unwrap();
        let answer: ServerJsonRpcMessage = serde_json::from_str(&data).unwrap();
        assert_refused(Ok(StreamableHttpPostResponse::Json(answer, None)));
        let written = server.await.unwrap();
        assert!(written < 64 * 1024 * 1024, "the client stopped reading: the server wrote {written} bytes");
    }
}
