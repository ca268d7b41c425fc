//! MCP both ways (issue 7). The client side: the experts' MCP tools, reached through one
//! shared pool of connections ([`client::McpPool`]), named for models by [`names`], their
//! results read for models by [`content`].

pub mod client;
pub mod content;
pub mod names;
pub mod report;
pub mod server;
