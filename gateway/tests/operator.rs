//! What an operator configures and an integrator meets at the edge: start-up
//! refusals (no tokens without `--demo`), `--metrics-listen`, the CORS
//! allow-list, `/readyz` semantics and the `Authorization` scheme.

mod common;
use common::*;
use serde_json::json;
use std::process::{Command, Stdio};

/// Runs the real binary with `args` and no `HOLDFAST_*` environment;
/// returns (exit success, stderr). It must exit by itself.
fn run_binary(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HOLDFAST_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run holdfast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_refuses_to_start_without_tokens_unless_demo() {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (ok, err) = run_binary(&["serve", "--listen", &listen]);
    assert!(!ok, "started without tokens");
    assert!(
        err.contains("--admin-token") && err.contains("--demo"),
        "the refusal says what to do: {err}"
    );
    assert!(
        !err.contains("\u{1b}["),
        "no colour codes when stderr is not a terminal: {err}"
    );
    let (ok, err) = run_binary(&[
        "serve",
        "--listen",
        &listen,
        "--admin-token",
        "short",
        "--checkout-token",
        "0123456789abcdef-checkout",
    ]);
    assert!(!ok, "started with a short admin token");
    assert!(err.contains("at least 16 bytes"), "{err}");
    let (ok, err) = run_binary(&[
        "serve",
        "--listen",
        &listen,
        "--admin-token",
        "same-token-0123456789",
        "--checkout-token",
        "same-token-0123456789",
    ]);
    assert!(!ok);
    assert!(err.contains("must differ"), "{err}");
}

#[tokio::test]
async fn metrics_can_move_to_their_own_port() {
    let mut args = demo_args();
    let port = free_port();
    args.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let gw = Gateway::start(args).await;
    assert_eq!(gw.get("/metrics").await.0, 404, "not on the public port");
    assert_eq!(
        gw.get("/healthz").await.0,
        200,
        "probes stay on the main port"
    );
    let text = gw
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("holdfast_holds_in_use"), "{text}");
    let ready = gw
        .http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let (status, cluster) = gw
        .call("GET", "/api/admin/cluster", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(
        cluster["nodes"],
        serde_json::json!([]),
        "a single node lists none"
    );
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        report["version"],
        env!("CARGO_PKG_VERSION"),
        "readiness says which build answers"
    );
    gw.stop().await;
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let shop = "https://shop.example";
    let mut args = demo_args();
    args.cors_origins = vec![shop.into(), "http://localhost:3000".into()];
    let gw = Gateway::start(args).await;
    let preflight = |origin: &'static str| {
        gw.http
            .request(reqwest::Method::OPTIONS, gw.url("/api/reservations"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight(shop).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], shop);
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "tokens are never cookies"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The real request from the shop's page gets the header too.
    let r = gw
        .http
        .post(gw.url("/api/reservations"))
        .header("origin", shop)
        .bearer_auth(CHECKOUT)
        .json(&json!({"sku": "cap-olive", "qty": 1, "buyer": "b-cors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], shop);
    gw.stop().await;

    // Without an allow-list there is no CORS at all: OPTIONS is a 405.
    let gw = Gateway::demo().await;
    let r = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/api/skus"))
        .header("origin", shop)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn bad_cors_origins_refuse_to_start() {
    let mut args = demo_args();
    args.cors_origins = vec!["https://shop.example/path".into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = holdfast_gateway::server::run(listener, args, Default::default())
        .await
        .expect_err("must refuse");
    assert!(format!("{err:#}").contains("not an origin"), "{err:#}");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let gw = Gateway::demo().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = gw
            .http
            .post(gw.url("/api/reservations"))
            .header("authorization", format!("{scheme} {CHECKOUT}"))
            .json(&json!({"sku": "cap-olive", "qty": 1, "buyer": format!("b-{scheme}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{scheme}");
    }
    let r = gw
        .http
        .post(gw.url("/api/reservations"))
        .header("authorization", format!("Basic {CHECKOUT}"))
        .json(&json!({"sku": "cap-olive", "qty": 1, "buyer": "b-basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    gw.stop().await;
}
