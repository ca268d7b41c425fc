//! The HTTP side of every remote model: one POST per attempt, the response read as
//! server-sent events and handed to the API's [`Dialect`] decoder, with timeouts, retries and
//! cancellation shared by all APIs.
//!
//! Owns [`RemoteModel`] (the [`Model`] of an `openai` or `anthropic` alias) and its settings.
//! Each [`Model::stream`] call runs on a tokio task of its own, which ends when the reply is
//! complete, fails, is cancelled, or nobody reads it any more.
//!
//! Invariants: a request is sent again only while its decoder has decoded nothing, so a reply
//! is never streamed twice; cancellation drops the request at once (the whole exchange is one
//! future raced against the token); the API key reaches only the request headers (marked
//! sensitive), never a log line or an error message, and neither do credentials written into
//! `base_url` (`user:pass@` is shown as `***@`); a response is read with bounded memory (the
//! decoder's line and event limits, 64 KiB of an error body).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retry::{Failure, RetryPolicy, parse_retry_after};
use super::sse::SseDecoder;
use super::wire::{Dialect, StreamDecoder};
use crate::model::{Model, ModelChunk, ModelError, ModelInfo, ModelRequest, ModelStream, Sampling};
use crate::protocol::shorten;
use crate::urls::redact_url_credentials;

/// How long a request may wait, phase by phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending the request to the first byte of the response body: covers a server that
    /// queues the request, and a model slow to read a long prompt.
    pub first_byte: Duration,
    /// Between two pieces of the body once it flows: a stalled stream fails instead of hanging.
    pub between_chunks: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            between_chunks: Duration::from_secs(60),
        }
    }
}

/// Everything a remote alias configures.
#[derive(Clone, PartialEq)]
pub struct RemoteSettings {
    /// The API's model name (`gpt-4o-mini`).
    pub model: String,
    /// The API root; `None` for the dialect's default.
    pub base_url: Option<String>,
    /// The key itself (read from the alias's `api_key_env` by the caller).
    pub api_key: Option<String>,
    /// Headers sent with every request after the dialect's own.
    pub extra_headers: Vec<(String, String)>,
    /// Sampling used where a request leaves a setting unset.
    pub defaults: Sampling,
    pub timeouts: Timeouts,
    /// Attempts after the first for failures that may pass (see [`RetryPolicy`]).
    pub max_retries: u32,
}

impl RemoteSettings {
    /// Settings for `model` at the API's default endpoint, without a key.
    pub fn new(model: impl Into<String>) -> Self {
        RemoteSettings {
            model: model.into(),
            base_url: None,
            api_key: None,
            extra_headers: Vec::new(),
            defaults: Sampling::default(),
            timeouts: Timeouts::default(),
            max_retries: super::retry::DEFAULT_MAX_RETRIES,
        }
    }
}

/// Written by hand so that printing settings never prints the key or a header's value (an
/// extra header may carry a second credential).
impl std::fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.extra_headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("RemoteSettings")
            .field("model", &self.model)
            .field("base_url", &self.base_url.as_deref().map(redact_url_credentials))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("extra_headers", &header_names)
            .field("defaults", &self.defaults)
            .field("timeouts", &self.timeouts)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// A model behind an HTTP API: the transport, specialised by a [`Dialect`].
#[derive(Clone)]
pub struct RemoteModel {
    dialect: Arc<dyn Dialect>,
    settings: RemoteSettings,
    client: reqwest::Client,
}

impl RemoteModel {
    /// Fails only when the HTTP client cannot be set up (no TLS backend).
    pub fn new(dialect: Arc<dyn Dialect>, settings: RemoteSettings) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeouts.connect)
            .build()
            .map_err(|err| ModelError::Provider(format!("cannot set up the HTTP client: {}", error_chain(&err))))?;
        Ok(RemoteModel { dialect, settings, client })
    }

    pub fn settings(&self) -> &RemoteSettings {
        &self.settings
    }
}

impl Model for RemoteModel {
    fn info(&self) -> ModelInfo {
        ModelInfo { provider: self.dialect.provider(), model: self.settings.model.clone(), digest: None }
    }

    fn stream(&self, request: ModelRequest, cancel: CancellationToken) -> ModelStream {
        let (tx, stream) = ModelStream::channel();
        let call = Call { dialect: self.dialect.clone(), settings: self.settings.clone(), client: self.client.clone() };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(call.run(request, cancel, tx));
            }
            Err(_) => {
                // The channel is empty, so this cannot be refused for want of room.
                let message = "a remote model must be called from within the tokio runtime".to_owned();
                let _ = tx.try_send(Err(ModelError::Provider(message)));
            }
        }
        stream
    }
}

type Sender = mpsc::Sender<Result<ModelChunk, ModelError>>;

/// One model call, owned by its task.
struct Call {
    dialect: Arc<dyn Dialect>,
    settings: RemoteSettings,
    client: reqwest::Client,
}

/// Why an attempt ended without a whole reply.
enum Stop {
    /// Failed; `failure` says whether another attempt may help.
    Failed { failure: Failure, message: String },
    /// The receiver was dropped: nobody wants the reply.
    Gone,
}

impl Stop {
    fn failed(failure: Failure, message: impl Into<String>) -> Self {
        Stop::Failed { failure, message: message.into() }
    }
}

impl Call {
    async fn run(self, request: ModelRequest, cancel: CancellationToken, tx: Sender) {
        let result = tokio::select! {
            // Dropping the exchange's future drops the connection: the server stops generating.
            () = cancel.cancelled() => Err(ModelError::Cancelled),
            () = tx.closed() => return,
            result = self.attempts(&request, &tx) => result,
        };
        if let Err(err) = result {
            let err = match err {
                ModelError::Provider(message) => ModelError::Provider(self.redact(message)),
                other => other,
            };
            if matches!(err, ModelError::Cancelled) {
                // The reader may have stopped reading once it cancelled: never wait for room.
                let _ = tx.try_send(Err(err));
            } else {
                let _ = tx.send(Err(err)).await;
            }
        }
    }

    /// The attempts of one call, until one succeeds or a failure is final.
    async fn attempts(&self, request: &ModelRequest, tx: &Sender) -> Result<(), ModelError> {
        let provider = self.dialect.provider();
        let url = self.dialect.url(self.settings.base_url.as_deref());
        let headers = self.headers().map_err(ModelError::Provider)?;
        let body = self.dialect.body(&self.settings.model, request, &self.settings.defaults);
        let body = serde_json::to_vec(&body)
            .map_err(|err| ModelError::Provider(format!("cannot encode the request to {provider}: {err}")))?;
        let policy = RetryPolicy::with_max_retries(self.settings.max_retries);
        let attempts = policy.max_retries.saturating_add(1);
        let mut retries = 0u32;
        loop {
            let mut decoder = self.dialect.decoder(request);
            let (failure, message) = match self.attempt(&url, &headers, &body, decoder.as_mut(), tx).await {
                Ok(()) => return Ok(()),
                Err(Stop::Gone) => return Ok(()),
                Err(Stop::Failed { failure, message }) => (failure, message),
            };
            // Part of the reply reached the reader: sending again would repeat it.
            let delay = if decoder.started() { None } else { policy.next_delay(&failure, retries, jitter()) };
            let Some(delay) = delay else {
                let message =
                    if retries > 0 { format!("{message} (gave up after {} attempts)", retries + 1) } else { message };
                return Err(ModelError::Provider(message));
            };
            retries += 1;
            let notice = format!(
                "retrying in {:.1} s after {} (attempt {} of {attempts})",
                delay.as_secs_f64(),
                failure.describe(),
                retries + 1,
            );
            tracing::info!(provider, model = %self.settings.model, "{notice}: {}", self.redact(message));
            if tx.send(Ok(ModelChunk::Notice(notice))).await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The dialect's headers, then the alias's, checked once for every attempt.
    fn headers(&self) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        map.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let dialect = self.dialect.headers(self.settings.api_key.as_deref());
        for (name, value) in dialect.iter().chain(&self.settings.extra_headers) {
            // The messages name the header, never its value: it may be a key.
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
            let mut value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("the value of header `{name}` has characters HTTP headers cannot carry"))?;
            // Keeps the value out of any `Debug` print of the request.
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }

    /// One request and its response, streamed to `tx`.
    async fn attempt(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
        decoder: &mut dyn StreamDecoder,
        tx: &Sender,
    ) -> Result<(), Stop> {
        let provider = self.dialect.provider();
        let timeouts = self.settings.timeouts;
        let first_byte_deadline = Instant::now() + timeouts.first_byte;
        let first_byte_missed = || {
            Stop::failed(
                Failure::Timeout,
                format!("no response from {provider} within {} (first-byte timeout)", seconds(timeouts.first_byte)),
            )
        };

        let sending = self.client.post(url).headers(headers.clone()).body(body.to_vec()).send();
        let mut response = match tokio::time::timeout_at(first_byte_deadline, sending).await {
            Err(_) => return Err(first_byte_missed()),
            Ok(Err(err)) => return Err(request_failure(&err, provider, url, timeouts.connect)),
            Ok(Ok(response)) => response,
        };

        let status = response.status();
        if status.as_u16() >= 400 {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            let text = read_error_body(&mut response, timeouts.between_chunks).await;
            let message = format!(
                "HTTP {} from {provider}: {}",
                status.as_u16(),
                self.dialect.error_message(status.as_u16(), &text)
            );
            return Err(Stop::failed(Failure::Status { status: status.as_u16(), retry_after }, message));
        }

        // A server that ignores `stream: true` answers with one JSON document: sending again
        // would get the same, and "the stream was cut" would mislead.
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok());
        if content_type.is_some_and(|kind| kind.trim_start().starts_with("application/json")) {
            let text = read_error_body(&mut response, timeouts.between_chunks).await;
            let message = format!(
                "{provider} answered with JSON instead of a stream of events (does the server support \
                 streaming?): {}",
                shorten(text.trim(), 300)
            );
            return Err(Stop::failed(Failure::Fatal, message));
        }

        let mut events = SseDecoder::new();
        let mut received_any = false;
        loop {
            let next = if received_any {
                tokio::time::timeout(timeouts.between_chunks, response.chunk()).await
            } else {
                tokio::time::timeout_at(first_byte_deadline, response.chunk()).await
            };
            let bytes = match next {
                Err(_) if received_any => {
                    let message = format!(
                        "the stream from {provider} stalled: nothing for {} (between-chunks timeout)",
                        seconds(timeouts.between_chunks)
                    );
                    return Err(Stop::failed(Failure::Timeout, message));
                }
                Err(_) => return Err(first_byte_missed()),
                Ok(Err(err)) => {
                    let message = format!("the stream from {provider} broke off: {}", error_chain(&err));
                    return Err(Stop::failed(Failure::Interrupted, message));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => bytes,
            };
            received_any = true;
            // A line or event past the decoder's limits is the server's fault and would be
            // again: the reply fails for good rather than growing until the wall-time limit.
            let decoded = events.push(&bytes).map_err(|err| {
                Stop::failed(Failure::Fatal, format!("the stream from {provider} was refused: {err}"))
            })?;
            for event in decoded {
                let chunks = decoder
                    .event(event.event.as_deref(), &event.data)
                    .map_err(|message| Stop::failed(Failure::Interrupted, format!("{provider}: {message}")))?;
                forward(tx, chunks).await?;
            }
        }
        events.finish();
        let chunks = decoder.finish().map_err(|message| Stop::failed(Failure::Interrupted, message))?;
        forward(tx, chunks).await
    }

    /// `message` without the API key, should a server or a library have quoted it, and
    /// without the credentials of any URL in it (`base_url = "https://user:pass@host"`).
    fn redact(&self, message: String) -> String {
        let message = redact_url_credentials(&message).into_owned();
        match self.settings.api_key.as_deref().map(str::trim) {
            Some(key) if key.len() >= 4 && message.contains(key) => message.replace(key, "<api key>"),
            _ => message,
        }
    }
}

async fn forward(tx: &Sender, chunks: Vec<ModelChunk>) -> Result<(), Stop> {
    for chunk in chunks {
        tx.send(Ok(chunk)).await.map_err(|_| Stop::Gone)?;
    }
    Ok(())
}

/// The body of an error response, for its message: at most 64 KiB, and whatever arrived when
/// it stalls or breaks (the status alone is still worth reporting).
async fn read_error_body(response: &mut reqwest::Response, wait: Duration) -> String {
    const LIMIT: usize = 64 * 1024;
    let mut body = Vec::new();
    while body.len() < LIMIT {
        match tokio::time::timeout(wait, response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// A failed send, classified: connection trouble retries, a malformed request does not.
fn request_failure(err: &reqwest::Error, provider: &str, url: &str, connect: Duration) -> Stop {
    // The URL without its query (a key is sometimes passed there, `?key=`) and without the
    // credentials of a `base_url` written as `https://user:pass@host`.
    let place = redact_url_credentials(url.split('?').next().unwrap_or(url));
    if err.is_builder() {
        return Stop::failed(Failure::Fatal, format!("cannot build the request to {place}: {}", error_chain(err)));
    }
    if err.is_timeout() {
        let message = format!("cannot connect to {provider} at {place} within {} (connect timeout)", seconds(connect));
        return Stop::failed(Failure::Timeout, message);
    }
    let message = format!("cannot reach {provider} at {place}: {}", error_chain(err));
    Stop::failed(Failure::Connect, message)
}

/// An error and its causes, `outer: inner: ...`, without the URL reqwest adds (ours is
/// printed once, without its query).
fn error_chain(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper and reqwest often repeat their cause's text in their own.
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        // No cause to quote: reqwest's own text, with the URL cut out.
        let text = err.to_string();
        return match err.url() {
            Some(url) => text.replace(&format!(" for url ({url})"), "").replace(url.as_str(), "<url>"),
            None => text,
        };
    }
    parts.join(": ")
}

fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 { format!("{secs:.0} s") } else { format!("{secs:.1} s") }
}

/// A number uniform in `[0, 1)` for backoff jitter. Not cryptographic; it only has to differ
/// between agents retrying at once, and `RandomState` is seeded per instance by the standard
/// library, so no random-number crate is needed.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let bits = std::collections::hash_map::RandomState::new().hash_one(nanos);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_in_range_and_varies() {
        let values: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.windows(2).any(|pair| pair[0] != pair[1]));
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(60)), "60 s");
        assert_eq!(seconds(Duration::from_millis(300)), "0.3 s");
    }

    #[test]
    fn debug_hides_the_key_header_values_and_url_credentials() {
        let mut settings = RemoteSettings::new("gpt-4o-mini");
        settings.api_key = Some("sk-secret-1234".into());
        settings.extra_headers = vec![("x-org".into(), "org-secret".into())];
        settings.base_url = Some("https://bob:secret-pw@llm.example.com/v1".into());
        let printed = format!("{settings:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("x-org"));
        assert!(printed.contains("https://***@llm.example.com/v1"), "{printed}");
    }

    #[tokio::test]
    async fn a_connect_error_never_shows_base_url_credentials() {
        // A port that was free a moment ago: nothing listens, so the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut settings = RemoteSettings::new("m");
        settings.base_url = Some(format!("http://bob:hunter2-pw@127.0.0.1:{port}/v1"));
        settings.max_retries = 0;
        let model = RemoteModel::new(Arc::new(super::super::OpenAiDialect), settings).unwrap();
        let request = crate::model::remote::wire::fixtures::request(vec![crate::protocol::ChatMessage::user("hi")]);
        let mut stream = model.stream(request, CancellationToken::new());
        let mut error = None;
        while let Some(item) = stream.next().await {
            if let Err(err) = item {
                error = Some(err.to_string());
            }
        }
        let error = error.unwrap();
        assert!(!error.contains("hunter2") && !error.contains("bob"), "{error}");
        assert!(error.contains(&format!("http://***@127.0.0.1:{port}/v1")), "the place is still named: {error}");
    }
}
