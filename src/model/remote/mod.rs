//! Models behind HTTP APIs: OpenAI-compatible chat completions and Anthropic's Messages API.
//!
//! Owns the split between what every API shares and what one API says. [`transport`] does the
//! HTTP (timeouts, retries with [`retry`]'s policy, cancellation) and reads the response as
//! server-sent events with [`sse`]; a [`wire::Dialect`] ([`openai`], [`anthropic`]) builds the
//! request body and decodes the events into chunks.
//!
//! Invariant: only [`transport`] does I/O; `sse`, `retry` and the dialects are pure and are
//! tested without a network.

pub mod anthropic;
pub mod openai;
pub mod retry;
pub mod sse;
pub mod transport;
pub mod wire;

pub use anthropic::AnthropicDialect;
pub use openai::OpenAiDialect;
pub use transport::{RemoteModel, RemoteSettings, Timeouts};
