//! A tiny real HTTP/1.1 server for tests of remote providers: scripted responses, recorded
//! requests, and the misbehaviours a client must survive (slow first byte, pauses between
//! pieces, a body cut off mid-stream, a body that goes on and on).
//!
//! Owns one listener on `127.0.0.1:0` and a task per connection. Each request is read whole
//! (`Content-Length` bodies only, which is what reqwest sends for a byte body), recorded, and
//! answered by the next [`Reply`] in the queue; the connection then closes (`Connection:
//! close`), so every request is a fresh connection and request order is arrival order. With
//! the queue empty the server answers 599, which a test sees as a failure it did not script.
//!
//! Invariant: what the client sent is recorded before anything is answered, so a test can read
//! the requests even when the client gave up on the reply.

// Shared by the tests of every remote API: a builder one of them does not use is not dead.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The request target (`/v1/chat/completions`).
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or `Value::String` of the raw text when it is not JSON.
    pub body: Value,
}

impl Recorded {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }
}

/// How the body's length is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    ContentLength,
}

/// One scripted response.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as pieces, each sent after its delay (one chunk each when chunked).
    pub pieces: Vec<(Vec<u8>, Duration)>,
    pub framing: Framing,
    /// Close the connection after this many pieces, without ending the body: a cut stream.
    pub cut_after: Option<usize>,
    /// Wait this long before the status line: a slow first byte.
    pub delay_before_status: Duration,
    /// Send the last piece this many more times, while the client still reads: an endless
    /// body, without holding it all in memory.
    pub repeat_last: usize,
}

impl Reply {
    /// A response with an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            pieces: Vec::new(),
            framing: Framing::ContentLength,
            cut_after: None,
            delay_before_status: Duration::ZERO,
            repeat_last: 0,
        }
    }

    /// A JSON body sent whole, with `Content-Length`.
    pub fn json(status: u16, body: &str) -> Self {
        Reply::status(status).header("content-type", "application/json").piece(body, Duration::ZERO)
    }

    /// A `text/event-stream` 200, chunked, one piece per event. Each item is an event's text
    /// without its closing blank line (`data: {...}` or `event: x\ndata: {...}`).
    pub fn sse<S: AsRef<str>>(events: impl IntoIterator<Item = S>) -> Self {
        let mut reply = Reply::status(200).header("content-type", "text/event-stream");
        reply.framing = Framing::Chunked;
        for event in events {
            reply = reply.piece(format!("{}\n\n", event.as_ref()), Duration::ZERO);
        }
        reply
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Appends a piece sent `delay` after the previous one.
    pub fn piece(mut self, bytes: impl Into<Vec<u8>>, delay: Duration) -> Self {
        self.pieces.push((bytes.into(), delay));
        self
    }

    /// Sets the delay before every piece.
    pub fn piece_delay(mut self, delay: Duration) -> Self {
        for piece in &mut self.pieces {
            piece.1 = delay;
        }
        self
    }

    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    pub fn cut_after(mut self, pieces: usize) -> Self {
        self.cut_after = Some(pieces);
        self
    }

    pub fn first_byte_after(mut self, delay: Duration) -> Self {
        self.delay_before_status = delay;
        self
    }

    pub fn repeat_last(mut self, times: usize) -> Self {
        self.repeat_last = times;
        self
    }
}

/// A running server. Dropping it stops accepting connections.
pub struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    /// Body bytes written to clients so far, over every connection.
    sent: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Server {
    /// Starts a server answering with `replies`, in order. Needs a tokio runtime.
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(replies.into_iter().collect::<VecDeque<_>>()));
        let sent = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let requests = requests.clone();
            let replies = replies.clone();
            let sent = sent.clone();
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(serve(socket, requests.clone(), replies.clone(), sent.clone()));
                }
            }
        });
        Server { addr, requests, replies, sent, accept }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues another reply.
    pub fn push(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Body bytes written so far: how much of an endless body a client read before leaving.
    pub fn body_bytes_sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

/// One connection: one request, one reply, close.
async fn serve(
    mut socket: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    sent: Arc<AtomicUsize>,
) {
    let Some(request) = read_request(&mut socket).await else { return };
    requests.lock().unwrap().push(request);
    let reply =
        replies.lock().unwrap().pop_front().unwrap_or_else(|| {
            Reply::json(599, r#"{"error":{"message":"the test server has no scripted reply left"}}"#)
        });
    // Write errors mean the client left (a timeout, a cancellation): nothing to do.
    let _ = write_reply(&mut socket, &reply, &sent).await;
}

async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some(Recorded { method, path, headers, body })
}

async fn write_reply(socket: &mut TcpStream, reply: &Reply, sent: &AtomicUsize) -> std::io::Result<()> {
    tokio::time::sleep(reply.delay_before_status).await;
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match reply.framing {
        Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
        Framing::ContentLength => {
            let repeated = reply.pieces.last().map_or(0, |(bytes, _)| bytes.len() * reply.repeat_last);
            let length: usize = reply.pieces.iter().map(|(bytes, _)| bytes.len()).sum::<usize>() + repeated;
            head.push_str(&format!("content-length: {length}\r\n"));
        }
    }
    head.push_str("connection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await?;
    for (done, (bytes, delay)) in reply.pieces.iter().enumerate() {
        if reply.cut_after == Some(done) {
            return cut(socket).await;
        }
        tokio::time::sleep(*delay).await;
        write_piece(socket, reply.framing, bytes, sent).await?;
    }
    if let Some((bytes, _)) = reply.pieces.last() {
        for _ in 0..reply.repeat_last {
            write_piece(socket, reply.framing, bytes, sent).await?;
        }
    }
    if reply.cut_after.is_some_and(|cut_after| cut_after >= reply.pieces.len()) {
        return cut(socket).await;
    }
    if reply.framing == Framing::Chunked {
        socket.write_all(b"0\r\n\r\n").await?;
    }
    socket.shutdown().await
}

async fn write_piece(
    socket: &mut TcpStream,
    framing: Framing,
    bytes: &[u8],
    sent: &AtomicUsize,
) -> std::io::Result<()> {
    match framing {
        Framing::Chunked if bytes.is_empty() => return Ok(()), // an empty chunk would end the body
        Framing::Chunked => {
            socket.write_all(format!("{:x}\r\n", bytes.len()).as_bytes()).await?;
            socket.write_all(bytes).await?;
            socket.write_all(b"\r\n").await?;
        }
        Framing::ContentLength => socket.write_all(bytes).await?,
    }
    sent.fetch_add(bytes.len(), Ordering::SeqCst);
    socket.flush().await
}

/// Ends the connection with the body unfinished.
async fn cut(socket: &mut TcpStream) -> std::io::Result<()> {
    socket.flush().await?;
    socket.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}
