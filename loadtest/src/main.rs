//! `holdfast-loadtest`: parses flags, runs, maps the outcome to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use holdfast_loadtest::config::Cli;
use holdfast_loadtest::{EXIT_ERROR, EXIT_USAGE, UsageError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,holdfast_loadtest=info".into()),
        )
        .init();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if cli.worker {
        let result = rt.block_on(holdfast_loadtest::worker::child_main());
        // The stdin reader may still be blocked in a read; do not wait for it.
        rt.shutdown_timeout(std::time::Duration::from_millis(100));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker error: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        };
    }
    match rt.block_on(holdfast_loadtest::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is::<UsageError>() => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
