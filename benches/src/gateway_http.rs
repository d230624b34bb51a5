//! The HTTP client of `compare`'s gateway rows: what a shop's checkout
//! backend does most often. Each client is one HTTP/1.1 keep-alive
//! connection with one request in flight: `POST /api/reservations`, then
//! `POST /api/holds/{hold}/commit`, JSON bodies, the checkout token, as a
//! pooled client (reqwest, a Node agent) sends them. The drops, phases and
//! audit are the websocket rows' ([`crate::gateway_ws`]).

use crate::measure::{Phase, latency_histogram, record};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::net::TcpStream;

use crate::clients::{ClientResult, ERRORS_MAX, REPLY_TIMEOUT, Shared};

/// One keep-alive connection to the gateway.
pub struct HttpClient {
    sender: SendRequest<Full<Bytes>>,
    authorization: String,
    host: String,
}

impl HttpClient {
    pub async fn connect(addr: SocketAddr, checkout_token: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authorization: format!("Bearer {checkout_token}"),
            host: addr.to_string(),
        })
    }

    /// One POST with a JSON body; the status and the body.
    pub async fn post(&mut self, path: &str, body: String) -> Result<(StatusCode, Bytes)> {
        let request = Request::post(path)
            .header("host", &self.host)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .context("no answer from the gateway")?
    }
}

/// The `error` code of a refusal's body.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unreadable".to_owned())
}

/// One client: reserve → commit pairs, one request at a time, until the
/// phases say stop.
pub async fn client_loop(mut c: HttpClient, shared: &Shared, buyer: &str) -> Result<ClientResult> {
    let mut result = ClientResult {
        pairs: 0,
        hist: latency_histogram(),
        commits_total: 0,
        errors: Default::default(),
    };
    loop {
        let phase = shared.phases.get();
        if phase == Phase::Stop {
            return Ok(result);
        }
        let drop = shared.drop.load(Ordering::Relaxed);
        let started = Instant::now();
        let body = format!(
            r#"{{"sku":"{}","qty":1,"buyer":"{buyer}"}}"#,
            shared.drops[drop]
        );
        let (status, answer) = c.post("/api/reservations", body).await?;
        let refused = match status {
            StatusCode::CREATED => {
                let hold = serde_json::from_slice::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|v| v["hold"].as_str().map(str::to_owned))
                    .context("a reservation answer without a hold")?;
                let (status, answer) = c
                    .post(&format!("/api/holds/{hold}/commit"), "{}".into())
                    .await?;
                if status == StatusCode::OK {
                    result.commits_total += 1;
                    if phase == Phase::Measure {
                        result.pairs += 1;
                        record(&mut result.hist, started.elapsed().as_nanos() as u64, 1);
                    }
                    None
                } else {
                    Some(error_code(&answer))
                }
            }
            _ => Some(error_code(&answer)),
        };
        match refused.as_deref() {
            None => {}
            Some("sold_out") => {
                if drop + 1 >= shared.drops.len() {
                    bail!("ran out of drops ({} sold out)", shared.drops.len());
                }
                let _ = shared.drop.compare_exchange(
                    drop,
                    drop + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Some(code) => {
                let n = result.errors.entry(code.to_owned()).or_default();
                *n += 1;
                if *n > ERRORS_MAX {
                    bail!("too many `{code}` refusals over HTTP");
                }
            }
        }
    }
}
