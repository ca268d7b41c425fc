//! `troupe mcp list` and `troupe mcp serve`: the experts' MCP servers, and troupe as one.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use tokio_util::sync::CancellationToken;
use troupe::mcp::client::McpPool;
use troupe::model::EnginePool;

use super::{EXIT_CONFIG, EXIT_FAILED, load};

#[derive(Subcommand)]
pub(crate) enum McpCommand {
    /// Start each server and show its health, tools (with input schemas), resources and prompts.
    List {
        /// One JSON object per server, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Serve the workbench's experts over MCP: stdio, or streamable HTTP with --http.
    Serve {
        /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:8765).
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// The environment variable holding the bearer token clients must send. Without it, a
        /// token is generated and printed: over HTTP a token is always required.
        #[arg(long, value_name = "VAR", requires = "http")]
        token_env: Option<String>,
    },
}

/// `troupe mcp …`.
pub(crate) async fn mcp(root: &Path, command: McpCommand) -> ExitCode {
    let Some(workbench) = load(root) else { return ExitCode::from(EXIT_CONFIG) };
    match command {
        McpCommand::List { json } => {
            let pool = McpPool::new(&workbench.settings.mcp_servers);
            if pool.is_empty() {
                say!("no MCP servers: add [mcp.servers.<name>] to troupe.toml (see the README)");
                return ExitCode::SUCCESS;
            }
            let mut failed = false;
            let mut reports = Vec::new();
            for name in pool.names() {
                let report = pool.describe(&name).await;
                failed |= report.health != "ok";
                if json {
                    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&report).unwrap_or_default());
                } else {
                    let _ = write!(std::io::stdout(), "{}", troupe::mcp::report::render(&report));
                }
                reports.push(report);
            }
            // What `troupe check` cannot know without starting the servers: an expert's entry
            // that matches none of a started server's tools.
            let experts = workbench.agents.values().map(|agent| {
                let file = agent.path.strip_prefix(&workbench.root).unwrap_or(&agent.path);
                (file.display().to_string(), agent.tools.as_slice())
            });
            for warning in troupe::mcp::report::unmatched_entries(&reports, experts) {
                say!("warning: {warning}");
            }
            pool.close().await;
            if failed { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS }
        }
        McpCommand::Serve { http, token_env } => {
            let token = match token_env.as_deref().map(|var| (var, std::env::var(var))) {
                None => None,
                Some((_, Ok(token))) if !token.trim().is_empty() => Some(token.trim().to_owned()),
                Some((var, _)) => {
                    say!("error: --token-env names `{var}`, which is not set (or empty): put the bearer token in it");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mcp = McpPool::new(&workbench.settings.mcp_servers);
            mcp.start_eager();
            let context = troupe::mcp::server::ServeContext {
                workbench,
                engines: EnginePool::default(),
                mcp: mcp.clone(),
                status: Arc::new(|line: &str| say!("{line}")),
            };
            let served = match http {
                None => troupe::mcp::server::serve_stdio(context).await.map(|dir| {
                    if let Some(dir) = dir {
                        say!("session recorded in {}", dir.display());
                    }
                }),
                Some(addr) => {
                    let stop = CancellationToken::new();
                    let stopper = stop.clone();
                    tokio::spawn(async move {
                        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                        let terminated = async {
                            match term.as_mut() {
                                Some(term) => {
                                    term.recv().await;
                                }
                                None => std::future::pending::<()>().await,
                            }
                        };
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            () = terminated => {}
                        }
                        stopper.cancel();
                    });
                    let options = troupe::mcp::server::HttpOptions { addr, token };
                    troupe::mcp::server::serve_http(context, options, stop, |listening| {
                        say!("serving MCP at http://{}/mcp (Ctrl-C stops)", listening.addr);
                        // As Jupyter does: a token nobody chose is shown once, where the user
                        // started the server, so they can hand it to their client.
                        if let Some(token) = listening.generated_token {
                            say!("clients must send the header: Authorization: Bearer {token}");
                            say!("(a token generated for this server; pass --token-env VAR to choose one)");
                        }
                    })
                    .await
                }
            };
            mcp.close().await;
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    say!("error: {err}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}
