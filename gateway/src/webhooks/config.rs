//! Webhook flags and endpoint definitions (from `--webhooks-file` or the
//! admin API), with their checks: a URL is http or https, and plain http
//! only to a loopback address unless `--webhook-http-allowed`.

use super::event::EventType;
use super::sign::Secret;
use serde::Deserialize;
use std::path::PathBuf;

/// Longest endpoint id.
pub const ENDPOINT_ID_BYTES_MAX: usize = 64;
/// Longest endpoint URL.
pub const URL_BYTES_MAX: usize = 2048;
/// Most requests in flight to one endpoint.
pub const CONCURRENCY_MAX: usize = 64;
/// Longest per-request timeout.
pub const TIMEOUT_MS_MAX: u64 = 60_000;

/// Webhook flags (`holdfast serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Turn webhooks on (the admin API can then add endpoints). Implied by
    /// `--webhooks-file`.
    #[arg(long = "webhooks", env = "HOLDFAST_WEBHOOKS")]
    pub enabled: bool,

    /// TOML file of `[[endpoints]]` (id, url, secret `whsec_...`, events,
    /// concurrency, timeout_ms, stock_changed_interval_ms). These endpoints
    /// are read-only through the admin API.
    #[arg(long = "webhooks-file", env = "HOLDFAST_WEBHOOKS_FILE")]
    pub file: Option<PathBuf>,

    /// Tries of one event before it goes to the dead letters. Default 8:
    /// with the default backoff, about four minutes of a receiver down.
    #[arg(
        long = "webhook-tries-max",
        env = "HOLDFAST_WEBHOOK_TRIES_MAX",
        default_value_t = 8
    )]
    pub tries_max: u32,

    /// First retry delay in ms; doubles per try, with jitter. Default 1000.
    #[arg(
        long = "webhook-backoff-ms",
        env = "HOLDFAST_WEBHOOK_BACKOFF_MS",
        default_value_t = 1_000
    )]
    pub backoff_ms: u64,

    /// Longest retry delay in ms. Default 120000.
    #[arg(
        long = "webhook-backoff-max-ms",
        env = "HOLDFAST_WEBHOOK_BACKOFF_MAX_MS",
        default_value_t = 120_000
    )]
    pub backoff_max_ms: u64,

    /// Events queued per endpoint in memory (without Redis). Past it, new
    /// events for that endpoint are dropped and counted
    /// (holdfast_webhook_dropped_total): the memory queue is lossy.
    /// Default 10000.
    #[arg(
        long = "webhook-queue-max",
        env = "HOLDFAST_WEBHOOK_QUEUE_MAX",
        default_value_t = 10_000
    )]
    pub queue_max: usize,

    /// Undelivered events kept per endpoint in its Redis stream (with
    /// `--redis`); past it Redis trims the oldest (`XADD MAXLEN ~`). Default
    /// 1000000: days of a receiver down at a busy shop's order rate.
    #[arg(
        long = "webhook-stream-max",
        env = "HOLDFAST_WEBHOOK_STREAM_MAX",
        default_value_t = 1_000_000
    )]
    pub stream_max: usize,

    /// Dead letters kept per endpoint (oldest dropped first). Default 1000.
    #[arg(
        long = "webhook-dead-letters-max",
        env = "HOLDFAST_WEBHOOK_DEAD_LETTERS_MAX",
        default_value_t = 1_000
    )]
    pub dead_letters_max: usize,

    /// Delivered events kept per endpoint for replay by id or time range.
    /// Default 10000.
    #[arg(
        long = "webhook-history-max",
        env = "HOLDFAST_WEBHOOK_HISTORY_MAX",
        default_value_t = 10_000
    )]
    pub history_max: usize,

    /// Most endpoints. Default 32.
    #[arg(
        long = "webhook-endpoints-max",
        env = "HOLDFAST_WEBHOOK_ENDPOINTS_MAX",
        default_value_t = 32
    )]
    pub endpoints_max: usize,

    /// Allow plain-http endpoints that are not on a loopback address
    /// (never in production: the events carry orders).
    #[arg(long = "webhook-http-allowed", env = "HOLDFAST_WEBHOOK_HTTP_ALLOWED")]
    pub http_allowed: bool,
}

impl WebhookArgs {
    pub fn is_on(&self) -> bool {
        self.enabled || self.file.is_some()
    }

    /// Checks what clap cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.tries_max == 0 || self.queue_max == 0 || self.endpoints_max == 0 {
            return Err(
                "--webhook-tries-max, --webhook-queue-max and --webhook-endpoints-max must be positive"
                    .into(),
            );
        }
        if self.stream_max < self.queue_max {
            return Err("--webhook-stream-max must be at least --webhook-queue-max".into());
        }
        if self.backoff_ms == 0 || self.backoff_max_ms < self.backoff_ms {
            return Err(
                "--webhook-backoff-ms must be positive and at most --webhook-backoff-max-ms".into(),
            );
        }
        Ok(())
    }
}

/// An endpoint as configured (file or API body).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub id: String,
    pub url: String,
    /// `whsec_...`; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Event types; absent: all but `hold.expired`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_interval_ms")]
    pub stock_changed_interval_ms: u64,
}

fn default_concurrency() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_interval_ms() -> u64 {
    1_000
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    endpoints: Vec<EndpointSpec>,
}

pub fn load_file(path: &std::path::Path) -> Result<Vec<EndpointSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.endpoints)
}

/// A checked endpoint definition.
#[derive(Debug, Clone)]
pub struct Checked {
    pub id: String,
    pub url: Url,
    pub secret: Secret,
    pub events: Vec<EventType>,
    pub concurrency: usize,
    pub timeout_ms: u64,
    pub stock_changed_interval_ms: u64,
}

/// A parsed endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub text: String,
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

/// A refusal naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

pub fn parse_url(text: &str, http_allowed: bool) -> Result<Url, FieldError> {
    if text.len() > URL_BYTES_MAX {
        return Err(err("url", format!("at most {URL_BYTES_MAX} bytes")));
    }
    let uri: axum::http::Uri = text.parse().map_err(|_| err("url", "not a valid URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(err("url", "must be http or https")),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| err("url", "needs a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if text.contains('@') {
        return Err(err("url", "must not carry credentials"));
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback && !http_allowed {
        return Err(err(
            "url",
            "plain http only to a loopback address (use https, or --webhook-http-allowed)",
        ));
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Ok(Url {
        text: text.to_string(),
        https,
        host,
        port,
        path,
    })
}

impl EndpointSpec {
    pub fn check(&self, http_allowed: bool) -> Result<Checked, FieldError> {
        if self.id.is_empty()
            || self.id.len() > ENDPOINT_ID_BYTES_MAX
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(err(
                "id",
                format!("1 to {ENDPOINT_ID_BYTES_MAX} of A-Z a-z 0-9 . _ -"),
            ));
        }
        let url = parse_url(&self.url, http_allowed)?;
        let secret = match &self.secret {
            Some(s) => Secret::parse(s).map_err(|m| err("secret", m))?,
            None => Secret::generate(),
        };
        let events = match &self.events {
            None => EventType::ALL
                .into_iter()
                .filter(|t| t.default_on())
                .collect(),
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    let t = EventType::parse(n)
                        .ok_or_else(|| err("events", format!("unknown event type {n:?}")))?;
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
                out
            }
        };
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return Err(err("concurrency", format!("1 to {CONCURRENCY_MAX}")));
        }
        if !(1..=TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(err("timeout_ms", format!("1 to {TIMEOUT_MS_MAX}")));
        }
        Ok(Checked {
            id: self.id.clone(),
            url,
            secret,
            events,
            concurrency: self.concurrency,
            timeout_ms: self.timeout_ms,
            stock_changed_interval_ms: self.stock_changed_interval_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_together() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            w: WebhookArgs,
        }
        let parse = |args: &[&str]| {
            use clap::Parser as _;
            Cli::parse_from(["holdfast"].iter().chain(args)).w.check()
        };
        assert!(parse(&[]).is_ok(), "the defaults");
        assert!(parse(&["--webhook-stream-max", "9999"]).is_err());
        assert!(parse(&["--webhook-queue-max", "0"]).is_err());
        assert!(parse(&["--webhook-tries-max", "0"]).is_err());
        assert!(parse(&["--webhook-backoff-max-ms", "10"]).is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("http://127.0.0.1:9/hook", false).is_ok());
        assert!(parse_url("http://localhost/hook", false).is_ok());
        assert!(parse_url("http://[::1]:8/h", false).is_ok());
        let u = parse_url("https://shop.example/hooks?x=1", false).unwrap();
        assert_eq!(
            (u.port, u.path.as_str(), u.https),
            (443, "/hooks?x=1", true)
        );
        assert!(parse_url("http://shop.example/h", false).is_err());
        assert!(parse_url("http://shop.example/h", true).is_ok());
        assert!(parse_url("ftp://127.0.0.1/h", true).is_err());
        assert!(parse_url("https://u:p@shop.example/h", true).is_err());
        assert!(parse_url("not a url", true).is_err());
    }
}
