//! MCP both ways: experts use other servers' tools, and troupe serves its own. The client side: the experts' MCP tools, reached through one
//! shared pool of connections ([`client::McpPool`]; HTTP servers through [`http_client`]), named
//! for models by [`names`], their results read for models by [`content`], listed by
//! [`report`]. The server side: [`server`], `troupe mcp serve`.

pub mod client;
pub mod content;
pub mod http_client;
pub mod names;
pub mod report;
pub mod server;
