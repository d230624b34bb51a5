//! TCP dialing: the target address, and source addresses spread over
//! 127.0.0.x so one machine can open more connections than one address's
//! ephemeral port range allows.
//!
//! Owns socket creation and the classification of errors that mean the
//! generator (not the server) ran out of sockets. Never retries by itself.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// Where the gateway listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header and URLs.
    pub authority: String,
}

impl Target {
    /// Parses `http://host:port[/]` (or `host:port`) and resolves the host.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        if rest.starts_with("https://") || url.starts_with("https://") || url.starts_with("ws") {
            anyhow::bail!(
                "target {url:?}: only plain http://host:port is supported (websockets go to ws://host:port/ws)"
            );
        }
        let authority = rest.trim_end_matches('/').to_string();
        if authority.is_empty() || authority.contains('/') {
            anyhow::bail!("target {url:?}: expected http://host:port");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| anyhow::anyhow!("target {url:?}: cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("target {url:?}: resolves to no address"))?;
        Ok(Target {
            addr,
            authority: with_port,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.authority)
    }
}

/// Opens TCP connections to the target, rotating over source addresses.
#[derive(Debug)]
pub struct Dialer {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Dialer {
    /// `sources` empty: let the kernel pick the source address.
    pub fn new(target: SocketAddr, sources: Vec<IpAddr>) -> Dialer {
        Dialer {
            target,
            sources,
            next: AtomicUsize::new(0),
        }
    }

    pub async fn connect(&self) -> io::Result<TcpStream> {
        if self.sources.is_empty() {
            let stream = TcpStream::connect(self.target).await?;
            // Requests are small and latency is what we measure: no Nagle delay.
            stream.set_nodelay(true)?;
            return Ok(stream);
        }
        // Relaxed: the counter only spreads load; any interleaving is fine.
        let src = self.sources[self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len()];
        holdfast_sys::connect_from(src, self.target).await
    }
}

/// True when an error means this machine ran out of sockets or ports: the
/// generator's limit, not the server's.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::EADDRNOTAVAIL
                | libc::EADDRINUSE
                | libc::ENOBUFS
                | libc::ENOMEM
        )
    )
}

/// The source addresses 127.0.0.1..=127.0.0.n.
pub fn loopback_sources(n: u32) -> Vec<IpAddr> {
    (1..=n.clamp(1, 254))
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_targets() {
        let t = Target::resolve("http://127.0.0.1:8080/").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(t.is_loopback());
        assert_eq!(t.ws_url(), "ws://127.0.0.1:8080/ws");
        assert_eq!(Target::resolve("127.0.0.2:9").await.unwrap().addr.port(), 9);
        assert!(Target::resolve("https://127.0.0.1:1").await.is_err());
        assert!(Target::resolve("http://127.0.0.1:1/api").await.is_err());
    }

    #[tokio::test]
    async fn dials_from_spread_source_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialer = Dialer::new(listener.local_addr().unwrap(), loopback_sources(2));
        let mut seen = Vec::new();
        for _ in 0..2 {
            let _c = dialer.connect().await.unwrap();
            let (_s, peer) = listener.accept().await.unwrap();
            seen.push(peer.ip());
        }
        seen.sort();
        assert_eq!(seen, loopback_sources(2));
    }
}
