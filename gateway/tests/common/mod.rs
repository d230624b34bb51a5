//! Shared helpers for the gateway's integration tests: start a gateway on
//! port 0 in this process, talk to it over real HTTP and real websockets,
//! and start a private `redis-server`. What every test tree shares (the
//! tool check, free ports, the redis-server launcher, waiting for a
//! condition, children that die with the test) is `holdfast-testkit`;
//! this module adds what is the gateway's own.
#![allow(dead_code)]

pub mod cluster;

use futures_util::{SinkExt, StreamExt};
use holdfast_gateway::config::ServeArgs;
use holdfast_gateway::protocol::{ClientMsg, SUBPROTOCOL_BINARY, ServerMsg};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "demo-admin";
pub const CHECKOUT: &str = "demo-checkout";

/// Upper bound for waiting on an event that must happen; generous so a
/// slow, shared machine never fails a test, never used as a sleep.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway with `args` (its listen address is replaced by a
    /// fresh port on 127.0.0.1, unless `args.listen` has a non-zero port).
    pub async fn start(args: ServeArgs) -> Self {
        init_tracing();
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(holdfast_gateway::server::run(
            listener,
            args,
            shutdown.clone(),
        ));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let gw = Self {
            addr,
            shutdown,
            handle,
            http,
        };
        gw.wait_ready().await;
        gw
    }

    /// The demo catalog, in memory, with fast broadcasts for tests.
    pub async fn demo() -> Self {
        Self::start(demo_args()).await
    }

    pub async fn wait_ready(&self) {
        eventually("the gateway's /readyz", || async {
            assert!(!self.handle.is_finished(), "gateway exited during start-up");
            match self.http.get(self.url("/readyz")).send().await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The `/metrics` page as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body")
    }

    /// `(status, json body)` of a request.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None).await
    }

    pub async fn sku(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/skus/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn create_sku(&self, def: Value) -> Value {
        let (status, body) = self
            .call("POST", "/api/admin/skus", Some(ADMIN), Some(def))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("server task")
            .expect("server result");
    }
}

pub fn demo_args() -> ServeArgs {
    let mut args = ServeArgs::for_tests();
    args.demo = true;
    args.broadcast_interval_ms = 20;
    args
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub binary: bool,
    next_id: u64,
}

impl Ws {
    pub async fn connect(gw: &Gateway, token: Option<&str>) -> Self {
        Self::connect_with(gw, token, false).await
    }

    pub async fn connect_with(gw: &Gateway, token: Option<&str>, binary: bool) -> Self {
        let mut request = gw.ws_url().into_client_request().unwrap();
        if let Some(t) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if binary {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                SUBPROTOCOL_BINARY.parse().unwrap(),
            );
        }
        let (stream, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connect");
        if binary {
            assert_eq!(
                response.headers().get("sec-websocket-protocol").unwrap(),
                SUBPROTOCOL_BINARY
            );
        }
        let mut ws = Self {
            stream,
            binary,
            next_id: 1,
        };
        match ws.recv().await {
            ServerMsg::Hello(_) => {}
            other => panic!("expected hello, got {other:?}"),
        }
        ws
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let frame = if self.binary {
            Message::Binary(msg.to_postcard().into())
        } else {
            Message::Text(msg.to_json().into())
        };
        self.stream.send(frame).await.expect("websocket send");
    }

    pub async fn send_raw(&mut self, frame: Message) {
        self.stream.send(frame).await.expect("websocket send");
    }

    /// The next protocol message (pings are answered by tungstenite).
    pub async fn recv(&mut self) -> ServerMsg {
        self.try_recv()
            .await
            .expect("a message before the connection closed")
    }

    /// The next protocol message, or `None` if the server closed.
    pub async fn try_recv(&mut self) -> Option<ServerMsg> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("a frame in time")?;
            match frame.ok()? {
                Message::Text(t) => {
                    return Some(ServerMsg::from_json(&t).expect("valid json from the server"));
                }
                Message::Binary(b) => {
                    return Some(ServerMsg::from_postcard(&b).expect("valid postcard"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads messages until `pick` returns `Some`.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&ServerMsg) -> Option<T>) -> T {
        loop {
            let m = self.recv().await;
            if let Some(t) = pick(&m) {
                return t;
            }
        }
    }

    pub async fn subscribe(&mut self, topics: &[&str]) -> ServerMsg {
        let id = self.id();
        self.send(&ClientMsg::Subscribe(
            holdfast_gateway::protocol::Subscribe {
                id,
                topics: topics.iter().map(|t| t.to_string()).collect(),
            },
        ))
        .await;
        match self.recv().await {
            ServerMsg::Subscribed(s) => assert_eq!(s.id, id),
            ServerMsg::Error(e) => return ServerMsg::Error(e),
            other => panic!("expected subscribed, got {other:?}"),
        }
        self.recv().await // the first snapshot
    }
}

// Each test file uses some of these.
#[allow(unused_imports)]
pub use holdfast_testkit::{free_port, require_tool};

/// Polls `probe` until it returns `Some`, at most [`PATIENCE`]; fails the
/// test naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    holdfast_testkit::eventually(what, PATIENCE, probe).await
}

/// Everything one Redis key holds (a hash's fields and values, a stream's
/// entries as `field=value`, a set's members...), as byte strings to
/// search: the privacy tests read every key back this way. An empty list
/// for a key gone meanwhile; a type no test knows fails the test.
pub async fn key_contents<C: redis::aio::ConnectionLike + Send>(
    c: &mut C,
    key: &str,
) -> Vec<Vec<u8>> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(c).await.unwrap();
    let read = |cmd: &str, rest: &[&str]| {
        let mut cmd = redis::cmd(cmd);
        cmd.arg(key).arg(rest);
        cmd
    };
    match kind.as_str() {
        "hash" => read("HGETALL", &[]).query_async(c).await.unwrap(),
        "set" => read("SMEMBERS", &[]).query_async(c).await.unwrap(),
        "zset" => read("ZRANGE", &["0", "-1"]).query_async(c).await.unwrap(),
        "list" => read("LRANGE", &["0", "-1"]).query_async(c).await.unwrap(),
        "string" => vec![read("GET", &[]).query_async(c).await.unwrap()],
        "stream" => {
            let r: redis::streams::StreamRangeReply =
                read("XRANGE", &["-", "+"]).query_async(c).await.unwrap();
            r.ids
                .iter()
                .flat_map(|e| {
                    e.map.iter().map(|(k, v)| {
                        let v: Vec<u8> = redis::from_redis_value(v.clone()).unwrap_or_default();
                        [k.as_bytes(), b"=", &v].concat()
                    })
                })
                .collect()
        }
        "none" => Vec::new(),
        other => panic!("a {other} key {key}: add its type to key_contents"),
    }
}

/// A private redis-server on a free port (the testkit's launcher: stopped
/// on drop, dies with a killed test process), optionally with a password
/// or TLS only. `None` only when redis-server is missing and skipping was
/// asked for ([`require_tool`]).
pub struct Redis {
    pub port: u16,
    server: holdfast_testkit::RedisServer,
    password: Option<String>,
    /// TLS only (`rediss://`): the PEM of the CA that signed its
    /// certificate, in a folder of its own that outlives the server.
    pub tls_ca: Option<std::path::PathBuf>,
    _tls_dir: Option<tempfile::TempDir>,
}

const FOR_WHAT: &str = "the Redis tests";

impl Redis {
    pub fn start() -> Option<Self> {
        Some(Self::from(holdfast_testkit::RedisServer::for_test(
            FOR_WHAT,
        )?))
    }

    fn from(server: holdfast_testkit::RedisServer) -> Self {
        Self {
            port: server.port(),
            server,
            password: None,
            tls_ca: None,
            _tls_dir: None,
        }
    }

    /// A server that requires `password` (AUTH).
    pub fn start_with_password(password: &str) -> Option<Self> {
        let server = holdfast_testkit::RedisServer::for_test_with(FOR_WHAT, &|_| {
            vec!["--requirepass".into(), password.into()]
        })?;
        Some(Self {
            password: Some(password.to_string()),
            ..Self::from(server)
        })
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1
    /// signed by a CA made for this test (`tls_ca`).
    pub fn start_tls() -> Option<Self> {
        if !require_tool("redis-server", FOR_WHAT) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "holdfast test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("redis.pem"), cert.pem()).unwrap();
        std::fs::write(path("redis.key"), key.serialize_pem()).unwrap();
        // The chosen port carries TLS; plain TCP is off (`--port 0`).
        let server = holdfast_testkit::RedisServer::start_with("redis-server", &|port| {
            let mut args: Vec<std::ffi::OsString> = vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string().into(),
            ];
            for (flag, file) in [
                ("--tls-cert-file", "redis.pem"),
                ("--tls-key-file", "redis.key"),
                ("--tls-ca-cert-file", "ca.pem"),
            ] {
                args.extend([flag.into(), path(file).into()]);
            }
            args.extend(["--tls-auth-clients".into(), "no".into()]);
            args
        })
        .expect("start redis-server with TLS");
        Some(Self {
            tls_ca: Some(path("ca.pem")),
            _tls_dir: Some(dir),
            ..Self::from(server)
        })
    }

    pub fn url(&self) -> String {
        if self.tls_ca.is_some() {
            return format!("rediss://127.0.0.1:{}", self.port);
        }
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// A connection of the test's own (not the gateway's), to look at or
    /// change what is stored.
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the server with SIGKILL (it keeps nothing on disk).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts a fresh, empty server on the same port (after `kill`).
    pub fn start_again(&mut self) {
        self.server
            .restart_empty()
            .expect("restart redis-server on its port");
    }
}

/// Every entry of the order stream (`hf:orders`), oldest first, as field →
/// value.
pub async fn order_stream(
    c: &mut redis::aio::MultiplexedConnection,
) -> Vec<std::collections::HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(c, "hf:orders")
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|id| {
            id.map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                .collect()
        })
        .collect()
}

/// The holds of the `committed` entries of the order stream.
pub async fn committed_holds(
    c: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashSet<String> {
    order_stream(c)
        .await
        .into_iter()
        .filter(|o| o.get("event").map(String::as_str) == Some("committed"))
        .filter_map(|mut o| o.remove("hold"))
        .collect()
}

/// Waits until `counter` (acknowledgements a load has seen) reaches `n`:
/// the moment to inject a fault mid-burst.
pub async fn wait_for_count(what: &str, counter: &std::sync::atomic::AtomicUsize, n: usize) {
    eventually(what, || async {
        (counter.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(())
    })
    .await
}

/// The buyer-token clock a gateway reads (`BuyerTokenArgs::clock`), driven
/// by the test: a token expires when the test says so, not after a sleep.
#[derive(Clone)]
pub struct TokenTestClock(pub std::sync::Arc<std::sync::atomic::AtomicU64>);

impl TokenTestClock {
    /// Starts at the real time now.
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Self(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(now)))
    }

    pub fn now_s(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed) / 1000
    }

    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn token_clock(&self) -> holdfast_gateway::auth::jwt::TokenClock {
        let c = self.0.clone();
        holdfast_gateway::auth::jwt::TokenClock::from_fn(move || {
            c.load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}
