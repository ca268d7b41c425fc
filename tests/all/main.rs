//! One integration-test binary, so linking is paid once.
//!
//! - `runtime`: the driver through the library API, with scripted models.
//! - `cli`: the `troupe` binary as a user runs it.
//! - `local_model`: the embedded model, for real.
//! - `embedder`: the memory's sentence embedder (all-MiniLM-L6-v2), for real.
//! - `memory_cli`: `troupe memory …` through the binary, with real embeddings.
//! - `tui_screens`: the workbench's screens as snapshots, driven by recorded events.
//! - `model_stream`: reading a model's reply stream (chunks of one kind, the closing error).
//! - `http_server`: a scripted HTTP server on 127.0.0.1 for the remote providers' tests.
//! - `remote_openai`, `remote_anthropic`: each provider over real HTTP.
//! - `remote_run`: a whole run on a remote model and the embedded one.
//! - `memory_run`: memory across runs: lessons recalled into prompts, forgotten, kept by agents.
//! - `matrix`: matrices of trials through the binary: records, shards and merge, resume, checks.
//! - `mcp_client`: troupe as an MCP client of real servers (`mcp-server-time`, a misbehaving one);
//!   `mcp_env` installs their Python side.
//! - `formats`: every run folder format ever written stays readable (shipped findings, frozen fixtures).
//! - `fuzz`: seeded mutation fuzzing of the TOML readers, the SSE decoder, tool arguments and the
//!   GGUF guard over the corpora in `fixtures/fuzz/`, about a minute in all.
//! - `faults`: the fault suite: hostile input and failures, and what the user gets.
//! - `tidy`: the house rules: the code map names every file with its layer, headers, no import up a layer.
//! - `mcp_server`: `troupe mcp serve` driven by the official Python SDK, over stdio and HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod embedder;
mod faults;
mod formats;
mod fuzz;
mod http_server;
mod local_model;
mod matrix;
mod mcp_client;
mod mcp_env;
mod mcp_server;
mod memory_cli;
mod memory_run;
mod model_stream;
mod remote_anthropic;
mod remote_openai;
mod remote_run;
mod runtime;
mod tidy;
mod tui_e2e;
mod tui_screens;
