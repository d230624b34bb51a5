//! Network clients of the gateway: TCP dialing from spread source
//! addresses, websocket sessions and HTTP/1.1 connections.
//!
//! Owns the transport and the mapping of answers to [`CallError`]; it never
//! decides what a buyer or viewer does next ([`crate::roles`] does).

pub mod http;
pub mod net;
pub mod ws;

use std::time::Duration;

use holdfast_protocol::{Code, Committed, Released, Reserved};

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The server refused with a stable error code (`sold_out`, ...).
    #[error("refused: {0}")]
    Refused(Code),
    /// An HTTP error status without a holdfast error body (a proxy, or a
    /// route the server does not have).
    #[error("HTTP {0} without an error code")]
    Status(u16),
    /// A request this client cannot make (an unknown host action).
    #[error("{0}")]
    Unsupported(String),
    /// The connection failed or closed, or the answer did not parse.
    #[error("transport: {0}")]
    Transport(String),
    /// No answer within the request timeout.
    #[error("timeout")]
    Timeout,
}

impl CallError {
    /// The error's name in counters and reports: the server's code, or
    /// `http_<status>`, `unsupported`, `transport`, `timeout`.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            CallError::Refused(c) => c.as_str().into(),
            CallError::Status(s) => format!("http_{s}").into(),
            CallError::Unsupported(_) => "unsupported".into(),
            CallError::Transport(_) => "transport".into(),
            CallError::Timeout => "timeout".into(),
        }
    }

    /// Whether the server refused with exactly `code`.
    pub fn is(&self, code: Code) -> bool {
        matches!(self, CallError::Refused(c) if *c == code)
    }

    /// Whether the server said the credentials are wrong (bad token).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            CallError::Refused(Code::Unauthorized | Code::Forbidden) | CallError::Status(401 | 403)
        )
    }

    /// Whether a retry with the same request id is the right reaction:
    /// the server said "later", or we do not know if it got the request.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Refused(c) => matches!(
                c,
                Code::Overloaded
                    | Code::Capacity
                    | Code::Unavailable
                    | Code::InProgress
                    | Code::RateLimited
                    | Code::NotReady
            ),
            CallError::Status(s) => matches!(s, 502..=504),
            CallError::Unsupported(_) => false,
            CallError::Transport(_) | CallError::Timeout => true,
        }
    }

    /// Business refusals are the server doing its job (the drop sold out),
    /// not failures; they do not count in `errors.rate`.
    pub fn is_business_refusal(&self) -> bool {
        matches!(
            self,
            CallError::Refused(Code::SoldOut | Code::LimitExceeded | Code::NotOpen)
        )
    }
}

/// A reserve request, independent of the protocol.
#[derive(Debug, Clone)]
pub struct ReserveReq {
    pub lines: Vec<(String, u32)>,
    pub buyer: String,
    pub request_id: String,
    /// The sales channel reserved on (`None`: the common pool).
    pub channel: Option<String>,
}

/// Limits that every client call honours.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub timeout: Duration,
}

/// The answer to one call plus when it was written (for burst spread).
pub struct Sent<T> {
    pub answer: Result<T, CallError>,
    /// When the request left (after the write), as an `Instant`.
    pub sent_at: std::time::Instant,
}

/// Reserve / commit / release over whichever protocol the run uses.
pub enum Checkout {
    Ws(std::sync::Arc<ws::WsSession>),
    WsPool(std::sync::Arc<ws::WsPool>),
    Http(std::sync::Arc<http::HttpPool>),
}

impl Checkout {
    pub async fn reserve(&self, r: &ReserveReq, lim: CallLimits) -> Sent<Reserved> {
        match self {
            Checkout::Ws(s) => s.reserve(r, lim).await,
            Checkout::WsPool(p) => match p.get().await {
                Ok(s) => s.reserve(r, lim).await,
                Err(e) => Sent {
                    answer: Err(e),
                    sent_at: std::time::Instant::now(),
                },
            },
            Checkout::Http(p) => p.reserve(r, lim).await,
        }
    }

    pub async fn commit(&self, hold: &str, request_id: &str, lim: CallLimits) -> Sent<Committed> {
        match self {
            Checkout::Ws(s) => s.commit(hold, request_id, lim).await,
            Checkout::WsPool(p) => match p.get().await {
                Ok(s) => s.commit(hold, request_id, lim).await,
                Err(e) => Sent {
                    answer: Err(e),
                    sent_at: std::time::Instant::now(),
                },
            },
            Checkout::Http(p) => p.commit(hold, request_id, lim).await,
        }
    }

    pub async fn release(&self, hold: &str, request_id: &str, lim: CallLimits) -> Sent<Released> {
        match self {
            Checkout::Ws(s) => s.release(hold, request_id, lim).await,
            Checkout::WsPool(p) => match p.get().await {
                Ok(s) => s.release(hold, request_id, lim).await,
                Err(e) => Sent {
                    answer: Err(e),
                    sent_at: std::time::Instant::now(),
                },
            },
            Checkout::Http(p) => p.release(hold, request_id, lim).await,
        }
    }
}
