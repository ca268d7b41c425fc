//! The fault suite: what a user gets when something goes wrong or someone is hostile. Each case
//! is named for the fault and asserts the outcome a user sees: a clear error or a clean stop, no
//! panic, no event lost before the fault, no secret on disk, in a response or on the terminal.
//!
//! - `run_folders`: hostile and old run folders for `fork`, `merge`, `--resume`, `rerender`.
//! - `config`: malformed and hostile TOML, dangling references, hostile agent names.
//! - `remote`: remote model failures (timeouts, 429, 5xx, cut streams, endless lines).
//! - `mcp_servers`: MCP servers that crash, hang, flood stderr or return huge results.
//! - `mcp_http`: hostile HTTP clients of `troupe mcp serve --http`, and two clients side by side.
//! - `runs`: runs killed, interrupted, out of disk, forking without bound; secrets in every channel.

mod config;
mod mcp_http;
mod mcp_servers;
mod remote;
mod run_folders;
mod runs;
