//! Delivery: one task per endpoint takes due events from its queue and
//! posts each on a connection of its own (hyper's HTTP/1 client over TCP,
//! or tokio-rustls with ring and the system's roots for https), at most
//! `concurrency` at once, each within the endpoint's timeout. A 2xx is
//! delivered; anything else is retried with exponential backoff and
//! jitter, and after `--webhook-tries-max` tries becomes a dead letter.
//!
//! An endpoint's task never touches another endpoint's queue, and nothing
//! here is on the reservation path: a hanging receiver holds only its own
//! endpoint's permits.

use super::Endpoint;
use super::config::Url;
use super::queue::{Failed, Queued};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use metrics::{counter, gauge};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest response body read (and then ignored): receivers answer small.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Longest a task waits without a wake-up before it looks again (a
/// safety net; pushes and finished deliveries ring the queue's bell).
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Retry timing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub tries_max: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The delay after `tries` failed tries: `base * 2^(tries-1)`, capped,
    /// then "equal jitter" (half fixed, half random) so a fleet of events
    /// failing together does not retry together.
    pub fn delay(&self, tries: u32) -> Duration {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << tries.saturating_sub(1).min(32))
            .min(self.max_ms);
        let half = exp / 2;
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).expect("the OS random source works");
        let jitter = u64::from_le_bytes(r) % (half + 1);
        Duration::from_millis(half + jitter)
    }
}

/// Runs one endpoint's deliveries until `stop` (shutdown or removal).
pub async fn run(
    ep: Arc<Endpoint>,
    backoff: Backoff,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(ep.concurrency));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            p = permits.clone().acquire_owned() => p.expect("never closed"),
        };
        let item = loop {
            ep.report();
            if let Some(item) = ep.queue.take(Instant::now()) {
                break item;
            }
            let wake = ep
                .queue
                .next_retry()
                .unwrap_or_else(|| Instant::now() + IDLE_RECHECK);
            tokio::select! {
                () = stop.cancelled() => return,
                () = ep.queue.notify.notified() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        };
        let ep = ep.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = deliver(&ep, item, backoff) => {}
            }
            drop(permit);
        });
    }
}

async fn deliver(ep: &Endpoint, item: Queued, backoff: Backoff) {
    let event = &item.event;
    let body = event.body();
    let timestamp_s = crate::auth::jwt::TokenClock::default().now_ms() / 1000;
    let signature = ep.secret.sign(&event.id, timestamp_s, &body);
    let headers = [
        ("webhook-id", event.id.clone()),
        ("webhook-timestamp", timestamp_s.to_string()),
        ("webhook-signature", signature),
    ];
    let timeout = Duration::from_millis(ep.timeout_ms);
    let result = match tokio::time::timeout(timeout, post(&ep.url, &headers, body)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("status {status}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} ms", ep.timeout_ms)),
    };
    let label = ep.id.clone();
    match result {
        Ok(()) => {
            counter!("holdfast_webhook_deliveries_total", "endpoint" => label, "outcome" => "delivered")
                .increment(1);
            let entry = item.entry.clone();
            ep.queue.delivered(item);
            if let (Some(streams), Some(entry)) = (&ep.streams, entry) {
                streams.delivered(&ep.id, &entry).await;
            }
        }
        Err(error) => {
            tracing::debug!(endpoint = %ep.id, event = %event.id, %error, "webhook try failed");
            let retry_at = Instant::now() + backoff.delay(item.tries + 1);
            let now_ms = crate::auth::jwt::TokenClock::default().now_ms();
            let outcome = ep
                .queue
                .failed(item, error, backoff.tries_max, retry_at, now_ms);
            let outcome = match outcome {
                Failed::Retrying => "failed",
                Failed::Dead(dead, entry) => {
                    if let (Some(streams), Some(entry)) = (&ep.streams, entry) {
                        streams
                            .dead(&ep.id, &entry, &dead, ep.queue.dead_letters_max())
                            .await;
                    }
                    "dead_letter"
                }
            };
            counter!("holdfast_webhook_deliveries_total", "endpoint" => label, "outcome" => outcome)
                .increment(1);
        }
    }
    ep.report();
    gauge!("holdfast_webhook_retrying", "endpoint" => ep.id.clone())
        .set(ep.queue.counts().retrying as f64);
}

/// The TLS client configuration (built once: loading the system's roots
/// reads files).
fn tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// POSTs `body` as JSON; the response status.
async fn post(url: &Url, headers: &[(&str, String)], body: Vec<u8>) -> Result<u16, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if url.https {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("tls name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(TokioIo::new(tls), url, headers, body).await
    } else {
        exchange(TokioIo::new(tcp), url, headers, body).await
    }
}

async fn exchange<T>(
    io: TokioIo<T>,
    url: &Url,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let conn = tokio::spawn(conn);
    let host = if (url.https && url.port == 443) || (!url.https && url.port == 80) {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let mut req = hyper::Request::post(url.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("holdfast/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = response.status().as_u16();
    // Read (a bounded part of) the answer so the connection ends cleanly.
    let mut body = response.into_body();
    let mut read = 0usize;
    while read < RESPONSE_BYTES_MAX {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => break,
        }
    }
    conn.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let b = Backoff {
            tries_max: 5,
            base_ms: 100,
            max_ms: 1_000,
        };
        for _ in 0..50 {
            let d1 = b.delay(1).as_millis();
            let d3 = b.delay(3).as_millis();
            let d9 = b.delay(9).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            assert!((200..=400).contains(&d3), "{d3}");
            assert!((500..=1_000).contains(&d9), "{d9}");
        }
    }
}
