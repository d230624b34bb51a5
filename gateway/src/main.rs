//! `holdfast`: parse flags, install logging, run, map the result to an exit
//! code. Everything else lives in the library.

use clap::Parser;

/// mimalloc instead of the system allocator: the request path allocates
/// small, short-lived buffers on every thread, where glibc's allocator
/// spent about a fifth of the gateway's CPU in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use holdfast_gateway::config::{Cli, Command};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hyper=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: escape codes in a log file or a
        // collector are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let Command::Serve(args) = &cli.command;
    if let Some(workers) = args.workers {
        builder.worker_threads(usize::from(workers));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let listener = listen(args.listen)
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone()));
            holdfast_gateway::server::run(listener, args, shutdown).await
        }
    }
}

/// Binds with a deep accept backlog: a drop opens with thousands of buyers
/// connecting in the same second, and a short backlog turns that into SYN
/// retransmits (a second of added latency) instead of queued accepts.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn signal_shutdown(shutdown: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = term => tracing::info!("received SIGTERM"),
    }
    shutdown.cancel();
}
