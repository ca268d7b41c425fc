//! The HTTP side of the MCP client: rmcp's streamable HTTP transport over the reqwest 0.12 that
//! troupe already uses for remote models. rmcp's own reqwest client needs reqwest 0.13 (and,
//! with TLS, aws-lc-rs: minutes of C build on two cores); implementing its small
//! `StreamableHttpClient` trait here costs about a hundred lines and no new build.
//!
//! What the trait asks: POST a JSON-RPC message (the answer is `202`, a JSON message, or an SSE
//! stream), GET the server's own SSE stream, DELETE a session. Status codes map to rmcp's
//! errors so its transport can react (an expired session, no SSE, a server error).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use http::{HeaderName, HeaderValue, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};

const SESSION_ID: &str = "Mcp-Session-Id";
const LAST_EVENT_ID: &str = "Last-Event-Id";
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";

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

fn events(response: reqwest::Response) -> Events {
    SseStream::from_bytes_stream(response.bytes_stream().map_err(std::io::Error::other)).boxed()
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
        let kind = content_type(&response);
        let is_json = kind.as_deref().is_some_and(|k| k.starts_with(JSON));
        if !status.is_success() {
            // A JSON-RPC error sent with an error status is still the server's answer.
            if is_json && status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                let failure = status_failure(&response);
                let body = response.bytes().await.map_err(client_error)?;
                return match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(message) => Ok(StreamableHttpPostResponse::Json(message, session)),
                    Err(_) => Err(failure),
                };
            }
            return Err(status_failure(&response));
        }
        match kind.as_deref() {
            Some(k) if k.starts_with(EVENT_STREAM) => Ok(StreamableHttpPostResponse::Sse(events(response), session)),
            Some(k) if k.starts_with(JSON) => {
                let body = response.bytes().await.map_err(client_error)?;
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
            Some(k) if k.starts_with(EVENT_STREAM) || k.starts_with(JSON) => Ok(events(response)),
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }
}
