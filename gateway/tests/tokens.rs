//! Signed buyer tokens: a buyer reserves for itself and touches only its
//! own holds, never commits; limits and request ids are the buyer's; every
//! refusal has its code over HTTP and over the websocket `auth` message;
//! HS256, EdDSA (PEM file) and ES256 (JWKS file) keys, rotation by `kid`;
//! a JWT in a websocket URL is refused; a token expiring mid-session loses
//! its rights (injected clock).

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{CHECKOUT, Gateway, TokenTestClock as Clock, Ws};
use holdfast_gateway::auth::jwt::LEEWAY_MS;
use holdfast_gateway::config::ServeArgs;
use holdfast_gateway::protocol::{Auth, ClientMsg, Commit, LineReq, Reserve, ServerMsg};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "shop-secret-0123456789abcdef-0123456789";
const SECRET_NEW: &str = "shop-secret-new-0123456789abcdef-012345";

fn args(clock: &Clock, keys: &[String]) -> ServeArgs {
    let mut a = common::demo_args();
    a.demo = false;
    a.buyer_tokens.keys = keys.to_vec();
    a.buyer_tokens.clock = clock.token_clock();
    a
}

fn hs_keys() -> Vec<String> {
    vec![format!("hs1:HS256:{SECRET}")]
}

fn hs(kid: Option<&str>, secret: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = kid.map(str::to_string);
    encode(
        &h,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Claims valid now for `sub`, with `extra` merged in.
fn claims(clock: &Clock, sub: &str, jti: &str, extra: Value) -> Value {
    let s = clock.now_s();
    let mut c = json!({"sub": sub, "jti": jti, "iat": s, "exp": s + 300});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

async fn start(clock: &Clock, keys: &[String]) -> Gateway {
    let gw = Gateway::start(args(clock, keys)).await;
    for (id, show) in [("tee", "show-a"), ("mug", "show-a"), ("hat", "show-b")] {
        gw.create_sku(json!({
            "id": id, "total": 100, "buyer_limit": 3, "show": show,
            "title": id, "price_minor": 1000, "currency": "NOK"
        }))
        .await;
    }
    gw
}

async fn reserve_http(gw: &Gateway, token: &str, body: Value) -> (u16, Value) {
    gw.call("POST", "/api/reservations", Some(token), Some(body))
        .await
}

fn reserve_msg(id: u64, sku: &str, qty: u32, request_id: Option<&str>) -> ClientMsg {
    ClientMsg::Reserve(Reserve {
        id,
        sku: Some(sku.into()),
        qty: Some(qty),
        lines: None,
        buyer: String::new(),
        request_id: request_id.map(str::to_string),
        allow_partial: false,
        channel: None,
    })
}

async fn auth(ws: &mut Ws, id: u64, token: &str) -> Result<String, String> {
    ws.send(&ClientMsg::Auth(Auth {
        id,
        token: token.into(),
    }))
    .await;
    ws.until(|m| match m {
        ServerMsg::Authed(a) if a.id == id => Some(Ok(a.role.as_str().to_string())),
        ServerMsg::Error(e) if e.id == Some(id) => Some(Err(e.error.as_str().to_string())),
        _ => None,
    })
    .await
}

/// The answer to request `id`: `Ok(hold)` or `Err(code)`.
async fn answer(ws: &mut Ws, id: u64) -> Result<String, String> {
    ws.until(|m| match m {
        ServerMsg::Reserved(r) if r.id == id => Some(Ok(r.hold.clone())),
        ServerMsg::Released(r) if r.id == id => Some(Ok(r.hold.clone())),
        ServerMsg::Extended(r) if r.id == id => Some(Ok(r.hold.clone())),
        ServerMsg::Committed(r) if r.id == id => Some(Ok(r.hold.clone())),
        ServerMsg::Error(e) if e.id == Some(id) => Some(Err(e.error.as_str().to_string())),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_buyer_reserves_for_itself_touches_only_its_holds_and_never_commits() {
    let clock = Clock::new();
    let gw = start(&clock, &hs_keys()).await;
    let alice = hs(
        Some("hs1"),
        SECRET,
        &claims(&clock, "alice", "a1", json!({})),
    );
    let bob = hs(Some("hs1"), SECRET, &claims(&clock, "bob", "b1", json!({})));

    let (status, body) = reserve_http(&gw, &alice, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(status, 201, "{body}");
    let hold = body["hold"].as_str().unwrap().to_string();
    let (status, body) =
        reserve_http(&gw, &alice, json!({"sku": "tee", "qty": 1, "buyer": "bob"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("buyer_mismatch"))
    );
    let (status, _) = reserve_http(
        &gw,
        &alice,
        json!({"sku": "tee", "qty": 1, "buyer": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "its own subject may be named");

    // Its own hold: readable; someone else's: as if it did not exist.
    let path = format!("/api/holds/{hold}");
    let (status, _) = gw.call("GET", &path, Some(&alice), None).await;
    assert_eq!(status, 200);
    for (method, p, body) in [
        ("GET", path.clone(), None),
        ("POST", format!("{path}/release"), None),
        (
            "POST",
            format!("{path}/extend"),
            Some(json!({"by_ms": 1000})),
        ),
    ] {
        let (status, body) = gw.call(method, &p, Some(&bob), body).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("hold_not_found")),
            "{p}"
        );
    }
    // Never commits; the shop's checkout token does.
    let (status, body) = gw
        .call("POST", &format!("{path}/commit"), Some(&alice), None)
        .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = gw
        .call("POST", &format!("{path}/commit"), Some(CHECKOUT), None)
        .await;
    assert_eq!(status, 200, "{body}");
    // Extend and release of its own live hold.
    let (_, body) = reserve_http(&gw, &alice, json!({"sku": "mug", "qty": 1})).await;
    let other = body["hold"].as_str().unwrap().to_string();
    let (status, body) = gw
        .call(
            "POST",
            &format!("/api/holds/{other}/extend"),
            Some(&alice),
            Some(json!({"by_ms": 1000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = gw
        .call(
            "POST",
            &format!("/api/holds/{other}/release"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // The same over the websocket.
    let mut ws = Ws::connect(&gw, None).await;
    assert_eq!(auth(&mut ws, 1, &bob).await, Ok("buyer".into()));
    ws.send(&reserve_msg(2, "hat", 1, None)).await;
    let bobs = answer(&mut ws, 2).await.expect("bob reserves");
    ws.send(&ClientMsg::Release(holdfast_gateway::protocol::Release {
        id: 3,
        hold: hold.clone(),
        request_id: None,
    }))
    .await;
    assert_eq!(answer(&mut ws, 3).await, Err("hold_not_found".into()));
    ws.send(&ClientMsg::Commit(Commit {
        id: 4,
        hold: bobs.clone(),
        qty: None,
        lines: None,
        request_id: None,
    }))
    .await;
    assert_eq!(answer(&mut ws, 4).await, Err("forbidden".into()));
    ws.send(&ClientMsg::Release(holdfast_gateway::protocol::Release {
        id: 5,
        hold: bobs,
        request_id: None,
    }))
    .await;
    assert!(answer(&mut ws, 5).await.is_ok());
    gw.stop().await;
}

#[tokio::test]
async fn limits_and_request_ids_belong_to_the_buyer_and_retries_are_not_counted() {
    let clock = Clock::new();
    let mut a = args(&clock, &hs_keys());
    a.buyer_tokens.reservations_max = 2;
    let gw = Gateway::start(a).await;
    gw.create_sku(json!({"id": "tee", "total": 100, "buyer_limit": 2}))
        .await;
    // The SKU's per-buyer limit counts the subject, across its tokens.
    let t1 = hs(None, SECRET, &claims(&clock, "carol", "c1", json!({})));
    let t2 = hs(None, SECRET, &claims(&clock, "carol", "c2", json!({})));
    let (status, _) = reserve_http(&gw, &t1, json!({"sku": "tee", "qty": 2})).await;
    assert_eq!(status, 201);
    let (status, body) = reserve_http(&gw, &t2, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("limit_exceeded"))
    );

    // Request ids: scoped per buyer; a retry replays and is not counted.
    let dave = hs(None, SECRET, &claims(&clock, "dave", "d1", json!({})));
    let erin = hs(None, SECRET, &claims(&clock, "erin", "e1", json!({})));
    let body = json!({"sku": "tee", "qty": 1, "request_id": "tap-1"});
    let (s1, first) = reserve_http(&gw, &dave, body.clone()).await;
    let (s2, retry) = reserve_http(&gw, &dave, body.clone()).await;
    let (s3, other) = reserve_http(&gw, &erin, body.clone()).await;
    assert_eq!((s1, s2, s3), (201, 200, 201));
    assert_eq!(first["hold"], retry["hold"]);
    assert_eq!(retry["replayed"], true);
    assert_ne!(
        first["hold"], other["hold"],
        "another buyer's tap-1 is its own"
    );
    // Dave's token: tap-1 counted once, so one more reservation, then no.
    let (status, _) = reserve_http(
        &gw,
        &dave,
        json!({"sku": "tee", "qty": 1, "request_id": "tap-2"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = reserve_http(
        &gw,
        &dave,
        json!({"sku": "tee", "qty": 1, "request_id": "tap-3"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("token_replayed"))
    );
    // A refused reservation is not counted: erin's sold-out try leaves
    // her second reservation.
    let (status, body) = reserve_http(&gw, &erin, json!({"sku": "nope", "qty": 1})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_sku")));
    let (status, _) = reserve_http(&gw, &erin, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(status, 201);
    gw.stop().await;
}

/// Ed25519 and P-256 key pairs made for the test.
struct TestKeys {
    ed_private: String,
    ed_public_pem: String,
    es_private: String,
    es_jwk: Value,
}

fn test_keys() -> TestKeys {
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = es.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    TestKeys {
        ed_private: ed.serialize_pem(),
        ed_public_pem: ed.public_key_pem(),
        es_private: es.serialize_pem(),
        es_jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": "es1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        }),
    }
}

fn signed(alg: Algorithm, kid: &str, private_pem: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    };
    encode(&h, claims, &key).unwrap()
}

/// Every refusal code, over HTTP and over the websocket's `auth` message
/// (401 codes refuse the token; 403 codes refuse the reservation).
#[tokio::test]
async fn every_refusal_has_its_code_over_http_and_websocket() {
    let clock = Clock::new();
    let keys = test_keys();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ed1.pem");
    std::fs::write(&pem, &keys.ed_public_pem).unwrap();
    let mut a = args(
        &clock,
        &[
            format!("hs1:HS256:{SECRET}"),
            format!("ed1:EdDSA:@{}", pem.display()),
        ],
    );
    a.buyer_tokens.reservations_max = 1;
    let gw = Gateway::start(a).await;
    for (id, show) in [("tee", "show-a"), ("hat", "show-b")] {
        gw.create_sku(json!({"id": id, "total": 100, "show": show, "title": id}))
            .await;
    }
    let s = clock.now_s();
    let c = |extra: Value| claims(&clock, "frank", "f1", extra);
    let tok = |claims: &Value| hs(Some("hs1"), SECRET, claims);
    let header_only = |header: &str, claims: &Value| {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    // Algorithm confusion: an HS256 token "signed" with the Ed25519 public
    // key's PEM as the secret, naming the Ed25519 key.
    let confused = hs(Some("ed1"), &keys.ed_public_pem, &c(json!({})));
    let mut forged = tok(&c(json!({})));
    forged.replace_range(forged.len() - 4.., "AAAA");
    let refusals_401: Vec<(&str, String)> = vec![
        (
            "token_expired",
            tok(&json!({"sub":"f","jti":"x","iat":s-600,"exp":s-10})),
        ),
        ("token_not_yet_valid", tok(&c(json!({"nbf": s + 60})))),
        ("token_lifetime_too_long", tok(&c(json!({"exp": s + 3600})))),
        ("token_bad_signature", forged),
        (
            "token_bad_signature",
            hs(Some("hs1"), SECRET_NEW, &c(json!({}))),
        ),
        ("token_unknown_kid", hs(Some("hs9"), SECRET, &c(json!({})))),
        ("token_unknown_kid", hs(None, SECRET, &c(json!({})))),
        (
            "token_bad_algorithm",
            header_only(r#"{"alg":"none","kid":"hs1"}"#, &c(json!({}))),
        ),
        ("token_bad_algorithm", confused),
        ("token_malformed", tok(&json!({"sub":"f","exp":s+60}))),
        ("token_malformed", tok(&json!({"jti":"f","exp":s+60}))),
        ("token_malformed", tok(&json!({"sub":"f","jti":"x"}))),
        (
            "token_malformed",
            header_only(r#"{"alg":1}"#, &c(json!({}))),
        ),
        ("token_malformed", {
            // Signed, but the claims are not JSON.
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"hs1"}"#),
                URL_SAFE_NO_PAD.encode("not json")
            );
            let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
            let sig =
                jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{signed}.{sig}")
        }),
    ];
    for (code, token) in &refusals_401 {
        let (status, body) = reserve_http(&gw, token, json!({"sku": "tee", "qty": 1})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some(*code)),
            "http {code}"
        );
        let mut ws = Ws::connect(&gw, None).await;
        assert_eq!(
            auth(&mut ws, 1, token).await,
            Err(code.to_string()),
            "ws {code}"
        );
        ws.send(&reserve_msg(2, "tee", 1, None)).await;
        assert_eq!(
            answer(&mut ws, 2).await,
            Err("unauthorized".into()),
            "still a viewer"
        );
    }
    // 403: a valid token that may not do this.
    let used = tok(&claims(&clock, "gina", "g1", json!({})));
    let (status, _) = reserve_http(&gw, &used, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(status, 201);
    let refusals_403: Vec<(&str, String, Value)> = vec![
        ("token_replayed", used, json!({"sku": "tee", "qty": 1})),
        (
            "token_sku_not_allowed",
            tok(&c(json!({"skus": ["hat"]}))),
            json!({"sku": "tee", "qty": 1}),
        ),
        (
            "token_sku_not_allowed",
            tok(&c(json!({"show": "show-b"}))),
            json!({"lines": [{"sku": "hat", "qty": 1}, {"sku": "tee", "qty": 1}]}),
        ),
        (
            "token_limit_exceeded",
            tok(&c(json!({"max_units": 2}))),
            json!({"sku": "tee", "qty": 3}),
        ),
        (
            "buyer_mismatch",
            tok(&c(json!({}))),
            json!({"sku": "tee", "qty": 1, "buyer": "someone"}),
        ),
    ];
    for (code, token, body) in &refusals_403 {
        let (status, answer_body) = reserve_http(&gw, token, body.clone()).await;
        assert_eq!(
            (status, answer_body["error"].as_str()),
            (403, Some(*code)),
            "http {code}"
        );
        let mut ws = Ws::connect(&gw, None).await;
        assert_eq!(auth(&mut ws, 1, token).await, Ok("buyer".into()));
        let req = Reserve {
            id: 2,
            sku: body["sku"].as_str().map(str::to_string),
            qty: body["qty"].as_u64().map(|q| q as u32),
            lines: body["lines"].as_array().map(|ls| {
                ls.iter()
                    .map(|l| LineReq {
                        sku: l["sku"].as_str().unwrap().into(),
                        qty: l["qty"].as_u64().unwrap() as u32,
                    })
                    .collect()
            }),
            buyer: body["buyer"].as_str().unwrap_or_default().to_string(),
            request_id: None,
            allow_partial: false,
            channel: None,
        };
        ws.send(&ClientMsg::Reserve(req)).await;
        assert_eq!(answer(&mut ws, 2).await, Err(code.to_string()), "ws {code}");
    }
    // Allowed within the claims.
    let ok = tok(&c(
        json!({"skus": ["tee"], "show": "show-a", "max_units": 2, "jti": "f9"}),
    ));
    let (status, body) = reserve_http(&gw, &ok, json!({"sku": "tee", "qty": 2})).await;
    assert_eq!(status, 201, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn eddsa_from_a_pem_file_es256_from_a_jwks_file_and_rotation_by_kid() {
    let clock = Clock::new();
    let keys = test_keys();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ed1.pem");
    std::fs::write(&pem, &keys.ed_public_pem).unwrap();
    let jwks = dir.path().join("keys.json");
    std::fs::write(&jwks, json!({"keys": [keys.es_jwk]}).to_string()).unwrap();
    let mut a = args(
        &clock,
        &[
            format!("old:HS256:{SECRET}"),
            format!("new:HS256:{SECRET_NEW}"),
            format!("ed1:EdDSA:@{}", pem.display()),
        ],
    );
    a.buyer_tokens.jwks = Some(jwks);
    let gw = Gateway::start(a).await;
    gw.create_sku(json!({"id": "tee", "total": 100})).await;
    let c = |jti: &str| claims(&clock, "hana", jti, json!({}));
    let ed = signed(Algorithm::EdDSA, "ed1", &keys.ed_private, &c("1"));
    let es = signed(Algorithm::ES256, "es1", &keys.es_private, &c("2"));
    let old = hs(Some("old"), SECRET, &c("3"));
    let new = hs(Some("new"), SECRET_NEW, &c("4"));
    for token in [&ed, &es, &old, &new] {
        let (status, body) = reserve_http(&gw, token, json!({"sku": "tee", "qty": 1})).await;
        assert_eq!(status, 201, "{body}");
    }
    // Keys are not interchangeable: each kid verifies with its own key.
    let mixed = hs(Some("old"), SECRET_NEW, &c("5"));
    let (status, body) = reserve_http(&gw, &mixed, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_bad_signature"))
    );
    let es_as_ed = signed(Algorithm::ES256, "ed1", &keys.es_private, &c("6"));
    let (status, body) = reserve_http(&gw, &es_as_ed, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_bad_algorithm"))
    );
    let ed_forged = signed(Algorithm::EdDSA, "ed1", &test_keys().ed_private, &c("7"));
    let (status, body) = reserve_http(&gw, &ed_forged, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_bad_signature"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn bad_key_configuration_is_refused_at_start() {
    let clock = Clock::new();
    let dir = tempfile::tempdir().unwrap();
    let short = args(&clock, &["k:HS256:short-secret".to_string()]);
    let err = run_to_error(short).await;
    assert!(err.contains("at least 32 bytes"), "{err}");
    let jwks = dir.path().join("private.json");
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = URL_SAFE_NO_PAD.encode(&ed.public_key_raw()[..32]);
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": x, "d": x}]}).to_string(),
    )
    .unwrap();
    let mut private = args(&clock, &[]);
    private.buyer_tokens.jwks = Some(jwks);
    let err = run_to_error(private).await;
    assert!(err.contains("private key"), "{err}");
}

async fn run_to_error(args: ServeArgs) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let result = tokio::time::timeout(
        common::PATIENCE,
        holdfast_gateway::server::run(listener, args, shutdown.clone()),
    )
    .await
    .expect("refused at once");
    shutdown.cancel();
    format!("{:#}", result.expect_err("refused"))
}

#[tokio::test]
async fn a_jwt_in_the_websocket_url_is_refused_and_shared_tokens_still_work_there() {
    let clock = Clock::new();
    let gw = start(&clock, &hs_keys()).await;
    let jwt = hs(
        Some("hs1"),
        SECRET,
        &claims(&clock, "ivan", "i1", json!({})),
    );
    let req = format!("{}?token={jwt}", gw.ws_url())
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "token_malformed");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let req = format!("{}?token={CHECKOUT}", gw.ws_url())
        .into_client_request()
        .unwrap();
    let (_stream, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    // The Authorization header on the upgrade carries a JWT.
    let mut ws = Ws::connect(&gw, Some(&jwt)).await;
    ws.send(&reserve_msg(1, "tee", 1, None)).await;
    assert!(answer(&mut ws, 1).await.is_ok());
    gw.stop().await;
}

#[tokio::test]
async fn a_token_expiring_mid_session_loses_buyer_rights_at_exp() {
    let clock = Clock::new();
    let gw = start(&clock, &hs_keys()).await;
    let token = hs(
        Some("hs1"),
        SECRET,
        &claims(&clock, "judy", "j1", json!({})),
    );
    let exp_ms = (clock.now_s() + 300) * 1000;
    let mut ws = Ws::connect(&gw, None).await;
    assert_eq!(auth(&mut ws, 1, &token).await, Ok("buyer".into()));
    ws.send(&reserve_msg(2, "tee", 1, None)).await;
    let hold = answer(&mut ws, 2).await.expect("reserved");
    // At exp plus the leeway it still works; one ms later it does not.
    clock.set_ms(exp_ms + LEEWAY_MS);
    ws.send(&reserve_msg(3, "tee", 1, None)).await;
    assert!(answer(&mut ws, 3).await.is_ok());
    clock.set_ms(exp_ms + LEEWAY_MS + 1);
    ws.send(&ClientMsg::Release(holdfast_gateway::protocol::Release {
        id: 4,
        hold,
        request_id: None,
    }))
    .await;
    assert_eq!(answer(&mut ws, 4).await, Err("token_expired".into()));
    ws.send(&reserve_msg(5, "tee", 1, None)).await;
    assert_eq!(
        answer(&mut ws, 5).await,
        Err("unauthorized".into()),
        "a viewer now"
    );
    // A fresh token restores the rights.
    let fresh = hs(
        Some("hs1"),
        SECRET,
        &claims(&clock, "judy", "j2", json!({})),
    );
    assert_eq!(auth(&mut ws, 6, &fresh).await, Ok("buyer".into()));
    ws.send(&reserve_msg(7, "tee", 1, None)).await;
    assert!(answer(&mut ws, 7).await.is_ok());
    gw.stop().await;
}

#[tokio::test]
async fn a_full_table_of_live_tokens_answers_503_capacity() {
    let clock = Clock::new();
    let mut a = args(&clock, &hs_keys());
    a.buyer_tokens.entries_max = 2;
    let gw = Gateway::start(a).await;
    gw.create_sku(json!({"id": "tee", "total": 100})).await;
    let t = |jti: &str, exp_in: u64| {
        let mut c = claims(&clock, "kim", jti, json!({}));
        c["exp"] = json!(clock.now_s() + exp_in);
        hs(None, SECRET, &c)
    };
    let (short, long) = (t("k1", 10), t("k2", 300));
    for token in [&short, &long] {
        let (status, _) = reserve_http(&gw, token, json!({"sku": "tee", "qty": 1})).await;
        assert_eq!(status, 201);
    }
    let (status, body) = reserve_http(&gw, &t("k3", 300), json!({"sku": "tee", "qty": 1})).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("capacity")));
    // Once the short token has expired (past the leeway), its entry is
    // forgotten and a new token fits.
    let k4 = t("k4", 300);
    clock.set_ms((clock.now_s() + 10) * 1000 + LEEWAY_MS + 1000);
    let (status, body) = reserve_http(&gw, &k4, json!({"sku": "tee", "qty": 1})).await;
    assert_eq!(status, 201, "{body}");
    gw.stop().await;
}

/// A buyer token's `channel` claim sells from that channel's allocation on
/// a SKU with channels (a body naming another channel is refused), and on a
/// SKU without channels only attributes the sale.
#[tokio::test]
async fn the_tokens_channel_sells_from_that_channels_allocation() {
    let clock = Clock::new();
    let gw = start(&clock, &hs_keys()).await;
    gw.create_sku(json!({"id": "split", "total": 10, "channels": [
        {"id": "tiktok", "quota": 4}, {"id": "web", "cap": 2}]}))
        .await;
    let tiktok = hs(
        Some("hs1"),
        SECRET,
        &claims(&clock, "b-1", "j-1", json!({"channel": "tiktok"})),
    );
    let (status, r) = reserve_http(&gw, &tiktok, json!({"sku": "split", "qty": 3})).await;
    assert_eq!(status, 201, "{r}");
    let sku = gw.sku("split").await;
    let held_on = |sku: &Value, id: &str| {
        sku["channels"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == id))
            .map(|c| c["held"].clone())
            .unwrap_or_else(|| panic!("no channel {id} in {sku}"))
    };
    assert_eq!(held_on(&sku, "tiktok"), 3, "{sku}");
    assert_eq!(held_on(&sku, "web"), 0, "{sku}");
    let (status, r) = reserve_http(
        &gw,
        &tiktok,
        json!({"sku": "split", "qty": 1, "channel": "web"}),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (403, Some("channel_not_allowed")),
        "the token's channel wins: {r}"
    );
    // A SKU without channels: the sale goes through on the common pool.
    let (status, r) = reserve_http(&gw, &tiktok, json!({"sku": "mug", "qty": 1})).await;
    assert_eq!(status, 201, "{r}");
    // A claim naming a channel the SKU lacks: 400, the claim named.
    let live = hs(
        Some("hs1"),
        SECRET,
        &claims(&clock, "b-2", "j-2", json!({"channel": "live"})),
    );
    let (status, r) = reserve_http(&gw, &live, json!({"sku": "split", "qty": 1})).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("unknown_channel")),
        "{r}"
    );
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .starts_with("channel (the buyer token's claim)"),
        "{r}"
    );

    // The same rule over the websocket: the claim sells from its channel,
    // another channel in the message is forbidden, an unknown one refused.
    let mut ws = Ws::connect(&gw, None).await;
    assert_eq!(auth(&mut ws, 1, &tiktok).await, Ok("buyer".into()));
    ws.send(&reserve_msg(2, "split", 1, None)).await;
    assert!(answer(&mut ws, 2).await.is_ok());
    assert_eq!(held_on(&gw.sku("split").await, "tiktok"), 4);
    let mut other = reserve_msg(3, "split", 1, None);
    if let ClientMsg::Reserve(r) = &mut other {
        r.channel = Some("web".into());
    }
    ws.send(&other).await;
    assert_eq!(answer(&mut ws, 3).await, Err("channel_not_allowed".into()));
    assert_eq!(auth(&mut ws, 4, &live).await, Ok("buyer".into()));
    ws.send(&reserve_msg(5, "split", 1, None)).await;
    assert_eq!(answer(&mut ws, 5).await, Err("unknown_channel".into()));
    gw.stop().await;
}
