//! HTTP/1.1 clients on hyper's connection API: one request in flight per
//! connection, keep-alive, and our own dialer (so HTTP connections also
//! spread over source addresses).
//!
//! Owns [`HttpConn`] (one connection), [`HttpPool`] (buyers' connections,
//! bounded) and [`Api`] (the coordinator's admin and read calls). Response
//! bodies are capped at [`BODY_BYTES_MAX`]; an error body becomes
//! [`CallError::Refused`] with the server's stable code.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use holdfast_protocol::{Committed, ErrorMsg, Released, Reserved};

use super::net::{Dialer, is_local_exhaustion};
use super::{CallError, CallLimits, ReserveReq, Sent};
use crate::stats::Recorder;

/// Largest response body read (the full SKU list of a 64-SKU catalog is a
/// few KiB; a deployment with a big catalog still fits).
pub const BODY_BYTES_MAX: usize = 8 << 20;

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    tx: SendRequest<Full<Bytes>>,
    authority: String,
}

impl HttpConn {
    pub async fn connect(dialer: &Dialer, authority: &str) -> Result<HttpConn, (bool, String)> {
        let stream = dialer
            .connect()
            .await
            .map_err(|e| (is_local_exhaustion(&e), e.to_string()))?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (false, e.to_string()))?;
        // The connection task ends when `tx` is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn {
            tx,
            authority: authority.to_string(),
        })
    }

    pub fn is_usable(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Sends one request; returns the status, the body, and when it left.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (Result<(u16, Bytes), CallError>, Instant) {
        let transport = |e: &dyn std::fmt::Display| CallError::Transport(e.to_string());
        if let Err(e) = self.tx.ready().await {
            return (Err(transport(&e)), Instant::now());
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = match req.body(Full::new(Bytes::from(body.unwrap_or_default()))) {
            Ok(r) => r,
            Err(e) => return (Err(transport(&e)), Instant::now()),
        };
        let sent_at = Instant::now();
        let resp = match self.tx.send_request(req).await {
            Ok(r) => r,
            Err(e) => return (Err(transport(&e)), sent_at),
        };
        let status = resp.status().as_u16();
        let body = match Limited::new(resp.into_body(), BODY_BYTES_MAX)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return (Err(CallError::Transport(e.to_string())), sent_at),
        };
        (Ok((status, body)), sent_at)
    }
}

/// Turns an HTTP answer into the typed body or the server's error code.
pub fn typed<T: DeserializeOwned>(r: Result<(u16, Bytes), CallError>) -> Result<T, CallError> {
    let (status, body) = r?;
    if (200..300).contains(&status) {
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Transport(format!("bad body from {status}: {e}")))
    } else {
        match serde_json::from_slice::<ErrorMsg>(&body) {
            Ok(e) => Err(CallError::Refused(e.error)),
            Err(_) => Err(CallError::Status(status)),
        }
    }
}

/// Buyers' HTTP connections: at most `size` at once, reused while alive.
pub struct HttpPool {
    idle: std::sync::Mutex<Vec<HttpConn>>,
    permits: Semaphore,
    dialer: Arc<Dialer>,
    authority: String,
    token: String,
    recorder: Recorder,
}

impl HttpPool {
    pub fn new(
        size: usize,
        dialer: Arc<Dialer>,
        authority: String,
        token: String,
        recorder: Recorder,
    ) -> HttpPool {
        HttpPool {
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            dialer,
            authority,
            token,
            recorder,
        }
    }

    async fn open(&self) -> Result<HttpConn, CallError> {
        let started = Instant::now();
        match HttpConn::connect(&self.dialer, &self.authority).await {
            Ok(c) => {
                self.recorder.with(|s| {
                    s.add("connections.ok", 1);
                    s.record("connect", started.elapsed().as_micros() as u64);
                });
                Ok(c)
            }
            Err((local, detail)) => {
                let code = if local { "local_exhaustion" } else { "tcp" };
                self.recorder.with(|s| {
                    s.add(&format!("connections.failed.{code}"), 1);
                    if local {
                        s.add("generator.socket_exhaustion", 1);
                    }
                    s.sample_error(format!("connect: {detail}"));
                });
                Err(CallError::Transport(format!("connect: {detail}")))
            }
        }
    }

    /// Opens `n` connections now, so the first requests (a burst) do not
    /// pay for the TCP handshake.
    pub async fn warm(&self, n: usize) {
        for _ in 0..n {
            if let Ok(c) = self.open().await {
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
            }
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (Result<(u16, Bytes), CallError>, Instant) {
        let _permit = self.permits.acquire().await.expect("never closed");
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .filter(HttpConn::is_usable);
        let mut conn = match pooled {
            Some(c) => c,
            None => match self.open().await {
                Ok(c) => c,
                Err(e) => return (Err(e), Instant::now()),
            },
        };
        let out = conn
            .request(method, path, Some(&self.token), Some(body))
            .await;
        if conn.is_usable() && out.0.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
        out
    }

    pub async fn reserve(&self, r: &ReserveReq, lim: CallLimits) -> Sent<Reserved> {
        let body = serde_json::to_vec(&super::ws::reserve_body(r)).expect("serialises");
        self.typed_call(Method::POST, "/api/reservations".into(), body, lim)
            .await
    }

    pub async fn commit(&self, hold: &str, request_id: &str, lim: CallLimits) -> Sent<Committed> {
        let body = serde_json::to_vec(&serde_json::json!({ "request_id": request_id }))
            .expect("serialises");
        self.typed_call(Method::POST, format!("/api/holds/{hold}/commit"), body, lim)
            .await
    }

    pub async fn release(&self, hold: &str, request_id: &str, lim: CallLimits) -> Sent<Released> {
        let body = serde_json::to_vec(&serde_json::json!({ "request_id": request_id }))
            .expect("serialises");
        self.typed_call(
            Method::POST,
            format!("/api/holds/{hold}/release"),
            body,
            lim,
        )
        .await
    }

    async fn typed_call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Vec<u8>,
        lim: CallLimits,
    ) -> Sent<T> {
        match tokio::time::timeout(lim.timeout, self.call(method, &path, body)).await {
            Ok((r, sent_at)) => Sent {
                answer: typed(r),
                sent_at,
            },
            Err(_) => Sent {
                answer: Err(CallError::Timeout),
                sent_at: Instant::now(),
            },
        }
    }
}

/// The coordinator's client for admin actions, the SKU list and hold
/// look-ups. One connection, reopened when it breaks; calls are sequential.
pub struct Api {
    dialer: Dialer,
    authority: String,
    admin_token: String,
    conn: tokio::sync::Mutex<Option<HttpConn>>,
    timeout: std::time::Duration,
}

impl Api {
    pub fn new(
        dialer: Dialer,
        authority: String,
        admin_token: String,
        timeout: std::time::Duration,
    ) -> Api {
        Api {
            dialer,
            authority,
            admin_token,
            conn: tokio::sync::Mutex::new(None),
            timeout,
        }
    }

    /// One request; `admin` adds the admin bearer token. Retries once on a
    /// broken keep-alive connection (the server may close idle ones).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        admin: bool,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), CallError> {
        let token = admin.then_some(self.admin_token.as_str());
        self.call_as(method, path, token, body).await
    }

    /// [`Api::call`] with any bearer token (or none).
    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), CallError> {
        let mut last = CallError::Transport("not tried".into());
        for _ in 0..2 {
            let mut g = self.conn.lock().await;
            if !g.as_ref().is_some_and(HttpConn::is_usable) {
                *g = Some(
                    HttpConn::connect(&self.dialer, &self.authority)
                        .await
                        .map_err(|(_, d)| CallError::Transport(d))?,
                );
            }
            let conn = g.as_mut().expect("just set");
            match tokio::time::timeout(
                self.timeout,
                conn.request(method.clone(), path, token, body.clone()),
            )
            .await
            {
                Ok((Ok(r), _)) => return Ok(r),
                Ok((Err(e), _)) => {
                    *g = None;
                    last = e;
                }
                Err(_) => {
                    *g = None;
                    last = CallError::Timeout;
                }
            }
        }
        Err(last)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        typed(self.call(Method::GET, path, false, None).await)
    }

    /// A GET with the admin token (checkout routes such as `GET
    /// /api/holds/{hold}` accept it too).
    pub async fn get_admin<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        typed(self.call(Method::GET, path, true, None).await)
    }

    /// A GET with `token` as the bearer token.
    pub async fn get_as<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<T, CallError> {
        typed(self.call_as(Method::GET, path, Some(token), None).await)
    }

    pub async fn admin<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CallError> {
        typed(
            self.call(
                Method::POST,
                path,
                true,
                Some(serde_json::to_vec(body).expect("serialises")),
            )
            .await,
        )
    }
}
