//! A test double of the gateway that oversells on purpose: it says yes to
//! every reservation. The one thing the real gateway cannot be made to do,
//! and the one the audit exists to catch; every honest-path test runs
//! against the real gateway instead ([`super::Gateway`]).
//!
//! Speaks the HTTP API and the websocket protocol (JSON and postcard);
//! binds 127.0.0.1:0 and lives as long as the test's runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use holdfast_protocol::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Hold {
    lines: Vec<LineReq>,
    deadline_ms: u64,
    state: &'static str,
}

struct Inner {
    skus: Vec<SkuState>,
    ttl: HashMap<String, u64>,
    holds: HashMap<String, Hold>,
    requests: HashMap<String, Reserved>,
    next_hold: u64,
    version: u64,
}

#[derive(Clone)]
pub struct Double(Arc<Mutex<Inner>>);

fn err(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(ErrorMsg {
            id: None,
            error: Code::parse(code).unwrap_or(Code::Invalid),
            message: code.replace('_', " "),
        }),
    )
        .into_response()
}

impl Double {
    fn reserve(&self, r: &Reserve) -> Result<Reserved, &'static str> {
        let mut g = self.0.lock().unwrap();
        if let Some(rid) = &r.request_id
            && let Some(prev) = g.requests.get(rid)
        {
            let mut p = prev.clone();
            p.replayed = true;
            p.id = r.id;
            return Ok(p);
        }
        let lines = match (&r.sku, r.qty, &r.lines) {
            (Some(s), Some(q), None) => vec![LineReq {
                sku: s.clone(),
                qty: q,
            }],
            (None, None, Some(l)) if !l.is_empty() => l.clone(),
            _ => return Err("invalid"),
        };
        // The oversell: no check of the window or of what is available.
        if lines.iter().any(|l| !g.skus.iter().any(|k| k.id == l.sku)) {
            return Err("unknown_sku");
        }
        let ttl = lines
            .iter()
            .map(|l| g.ttl.get(&l.sku).copied().unwrap_or(10_000))
            .min()
            .unwrap();
        for l in &lines {
            let k = g.skus.iter_mut().find(|k| k.id == l.sku).unwrap();
            k.held += l.qty;
            k.sold_out = k.available == 0;
        }
        g.next_hold += 1;
        let hold = format!("{:013x}", g.next_hold);
        let deadline_ms = now_ms() + ttl;
        g.holds.insert(
            hold.clone(),
            Hold {
                lines: lines.clone(),
                deadline_ms,
                state: "held",
            },
        );
        g.version += 1;
        let units = lines.iter().map(|l| l.qty).sum();
        let out = Reserved {
            id: r.id,
            hold,
            deadline_ms,
            units,
            lines,
            replayed: false,
        };
        if let Some(rid) = &r.request_id {
            g.requests.insert(rid.clone(), out.clone());
        }
        Ok(out)
    }

    fn finish(&self, hold: &str, commit: bool) -> Result<u32, &'static str> {
        let mut g = self.0.lock().unwrap();
        let Some(h) = g.holds.get_mut(hold) else {
            return Err("hold_not_found");
        };
        match h.state {
            "held" => {}
            "expired" => return Err("hold_expired"),
            "committed" if commit => return Ok(h.lines.iter().map(|l| l.qty).sum()),
            "released" if !commit => return Ok(0),
            "committed" => return Err("already_committed"),
            _ => return Err("already_released"),
        }
        h.state = if commit { "committed" } else { "released" };
        let lines = h.lines.clone();
        for l in &lines {
            let k = g.skus.iter_mut().find(|k| k.id == l.sku).unwrap();
            k.held -= l.qty;
            if commit {
                k.sold += l.qty;
            }
            k.sold_out = k.available == 0;
        }
        g.version += 1;
        Ok(lines.iter().map(|l| l.qty).sum())
    }

    fn expire(&self) {
        let mut g = self.0.lock().unwrap();
        let now = now_ms();
        let due: Vec<String> = g
            .holds
            .iter()
            .filter(|(_, h)| h.state == "held" && h.deadline_ms <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            let h = g.holds.get_mut(&id).unwrap();
            h.state = "expired";
            let lines = h.lines.clone();
            for l in &lines {
                let k = g.skus.iter_mut().find(|k| k.id == l.sku).unwrap();
                k.held -= l.qty;
                k.available += l.qty;
                k.sold_out = k.available == 0;
            }
            g.version += 1;
        }
    }

    fn answer(&self, msg: ClientMsg) -> Option<ServerMsg> {
        let e = |id: u64, code: &str| {
            ServerMsg::Error(ErrorMsg {
                id: Some(id),
                error: Code::parse(code).unwrap_or(Code::Invalid),
                message: code.into(),
            })
        };
        Some(match msg {
            ClientMsg::Reserve(r) => match self.reserve(&r) {
                Ok(x) => ServerMsg::Reserved(x),
                Err(c) => e(r.id, c),
            },
            ClientMsg::Commit(c) => match self.finish(&c.hold, true) {
                Ok(sold) => ServerMsg::Committed(Committed {
                    id: c.id,
                    hold: c.hold,
                    sold,
                    returned: 0,
                    replayed: false,
                }),
                Err(code) => e(c.id, code),
            },
            ClientMsg::Release(r) => match self.finish(&r.hold, false) {
                Ok(_) => ServerMsg::Released(Released {
                    id: r.id,
                    hold: r.hold,
                }),
                Err(code) => e(r.id, code),
            },
            ClientMsg::Ping(p) => ServerMsg::Pong(Pong {
                id: p.id,
                ts_ms: now_ms(),
            }),
            _ => return None,
        })
    }
}

/// Starts the double on 127.0.0.1:0; returns its address.
/// Starts the overselling double; returns its address.
pub async fn start_overselling() -> SocketAddr {
    let d = Double(Arc::new(Mutex::new(Inner {
        skus: vec![],
        ttl: HashMap::new(),
        holds: HashMap::new(),
        requests: HashMap::new(),
        next_hold: 0,
        version: 0,
    })));
    let expirer = d.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            expirer.expire();
        }
    });
    let app = Router::new()
        .route(
            "/readyz",
            get(|| async { Json(serde_json::json!({"status":"ready"})) }),
        )
        .route("/api/skus", get(list))
        .route("/api/admin/skus", post(create))
        .route("/api/admin/skus/{id}/window", post(window))
        .route("/api/admin/skus/{id}/restock", post(restock))
        .route("/api/reservations", post(http_reserve))
        .route("/api/holds/{hold}", get(hold_view))
        .route("/api/holds/{hold}/commit", post(http_commit))
        .route("/api/holds/{hold}/release", post(http_release))
        .route("/ws", get(ws))
        .with_state(d);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn list(State(d): State<Double>) -> Json<SkuList> {
    Json(SkuList {
        ts_ms: now_ms(),
        skus: d.0.lock().unwrap().skus.clone(),
    })
}

async fn create(State(d): State<Double>, Json(def): Json<SkuDef>) -> Response {
    let mut g = d.0.lock().unwrap();
    if g.skus.iter().any(|k| k.id == def.id) {
        return err(StatusCode::CONFLICT, "already_exists");
    }
    let state = def.window.as_ref().map_or(SaleState::Open, |w| w.state);
    let k = SkuState {
        id: def.id.clone(),
        available: def.total,
        held: 0,
        sold: 0,
        total: def.total,
        state,
        opens_at_ms: None,
        sold_out: def.total == 0,
        all_in_carts: false,
        buyer_limit: def.buyer_limit,
        meta: None,
        channels: Vec::new(),
    };
    g.ttl
        .insert(def.id.clone(), def.hold_ttl_ms.unwrap_or(300_000));
    g.skus.push(k.clone());
    (StatusCode::CREATED, Json(k)).into_response()
}

async fn window(
    State(d): State<Double>,
    Path(id): Path<String>,
    Json(w): Json<WindowReq>,
) -> Response {
    let mut g = d.0.lock().unwrap();
    g.version += 1;
    match g.skus.iter_mut().find(|k| k.id == id) {
        Some(k) => {
            k.state = w.state;
            Json(k.clone()).into_response()
        }
        None => err(StatusCode::NOT_FOUND, "unknown_sku"),
    }
}

async fn restock(
    State(d): State<Double>,
    Path(id): Path<String>,
    Json(q): Json<QtyReq>,
) -> Response {
    let mut g = d.0.lock().unwrap();
    g.version += 1;
    match g.skus.iter_mut().find(|k| k.id == id) {
        Some(k) => {
            k.total += q.qty;
            k.available += q.qty;
            k.sold_out = k.available == 0;
            Json(k.clone()).into_response()
        }
        None => err(StatusCode::NOT_FOUND, "unknown_sku"),
    }
}

fn status_of(code: &str) -> StatusCode {
    match code {
        "unknown_sku" | "hold_not_found" => StatusCode::NOT_FOUND,
        "invalid" => StatusCode::BAD_REQUEST,
        _ => StatusCode::CONFLICT,
    }
}

async fn http_reserve(State(d): State<Double>, Json(r): Json<Reserve>) -> Response {
    match d.reserve(&r) {
        Ok(x) => (
            if x.replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            Json(x),
        )
            .into_response(),
        Err(c) => err(status_of(c), c),
    }
}

async fn http_commit(State(d): State<Double>, Path(hold): Path<String>) -> Response {
    match d.finish(&hold, true) {
        Ok(sold) => Json(Committed {
            id: 0,
            hold,
            sold,
            returned: 0,
            replayed: false,
        })
        .into_response(),
        Err(c) => err(status_of(c), c),
    }
}

async fn http_release(State(d): State<Double>, Path(hold): Path<String>) -> Response {
    match d.finish(&hold, false) {
        Ok(_) => Json(Released { id: 0, hold }).into_response(),
        Err(c) => err(status_of(c), c),
    }
}

async fn hold_view(State(d): State<Double>, Path(hold): Path<String>) -> Response {
    let g = d.0.lock().unwrap();
    match g.holds.get(&hold) {
        Some(h) => Json(HoldView {
            hold,
            state: serde_json::from_value(serde_json::json!(h.state)).expect("a hold state"),
            deadline_ms: h.deadline_ms,
            lines: h
                .lines
                .iter()
                .map(|l| HoldLineView {
                    sku: l.sku.clone(),
                    qty: l.qty,
                    sold: 0,
                })
                .collect(),
        })
        .into_response(),
        None => err(StatusCode::NOT_FOUND, "hold_not_found"),
    }
}

async fn ws(State(d): State<Double>, up: WebSocketUpgrade) -> Response {
    up.protocols([SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON])
        .on_upgrade(move |socket| session(d, socket))
}

async fn session(d: Double, mut socket: WebSocket) {
    let binary = socket
        .protocol()
        .is_some_and(|p| p.as_bytes() == SUBPROTOCOL_BINARY.as_bytes());
    let enc = |m: ServerMsg| {
        if binary {
            Message::Binary(m.to_postcard().into())
        } else {
            Message::Text(m.to_json().into())
        }
    };
    let hello = ServerMsg::Hello(Hello {
        server: "double".into(),
        role: Role::Checkout,
        subscriptions_max: 64,
        frame_bytes_max: 4096,
        messages_per_sec_max: 50,
        broadcast_interval_ms: 100,
    });
    if socket.send(enc(hello)).await.is_err() {
        return;
    }
    let mut topics: Vec<String> = Vec::new();
    let mut seq = 0u64;
    let mut seen_version = u64::MAX;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            m = socket.recv() => {
                let Some(Ok(m)) = m else { return };
                let msg = match &m {
                    Message::Text(t) => ClientMsg::from_json(t.as_str()).ok(),
                    Message::Binary(b) => ClientMsg::from_postcard(b).ok(),
                    Message::Close(_) => return,
                    _ => None,
                };
                let Some(msg) = msg else { continue };
                if let ClientMsg::Subscribe(s) = &msg {
                    topics = s.topics.clone();
                    if socket.send(enc(ServerMsg::Subscribed(Subscribed { id: s.id, topics: topics.clone() }))).await.is_err() { return; }
                    let skus = d.0.lock().unwrap().skus.clone();
                    seq += 1;
                    seen_version = d.0.lock().unwrap().version;
                    for t in &topics {
                        if socket.send(enc(ServerMsg::Snapshot(Snapshot { topic: t.clone(), seq, ts_ms: now_ms(), skus: skus.clone() }))).await.is_err() { return; }
                    }
                    continue;
                }
                if let Some(a) = d.answer(msg)
                    && socket.send(enc(a)).await.is_err() { return; }
            }
            _ = tick.tick() => {
                if topics.is_empty() { continue; }
                let (v, skus) = { let g = d.0.lock().unwrap(); (g.version, g.skus.clone()) };
                if v == seen_version { continue; }
                seen_version = v;
                seq += 1;
                for t in &topics {
                    if socket.send(enc(ServerMsg::Update(Update { topic: t.clone(), seq, ts_ms: now_ms(), skus: skus.clone() }))).await.is_err() { return; }
                }
            }
        }
    }
}
