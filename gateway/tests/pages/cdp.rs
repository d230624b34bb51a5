//! A small Chrome DevTools Protocol client that drives Debian's headless
//! Chromium for the page tests: launch with a fresh profile, open pages,
//! evaluate JavaScript, click and type through real input events, poll the
//! DOM for a state with a deadline, take screenshots, and collect what the
//! page logged (exceptions, console errors, CSP violations).
//!
//! Why not a browser-automation crate: CDP is JSON over one websocket, and
//! the dozen commands the tests need fit in this file on top of the
//! tokio-tungstenite the gateway already uses. That keeps the tests free of
//! a large generated binding that lags Chromium's protocol, and of any code
//! that could try to download a browser: this client only ever starts the
//! `chromium` it finds on the machine.
//!
//! Limits: every command waits at most [`PATIENCE`]; the page log keeps the
//! newest [`LOG_MAX`] entries; the browser is killed (its whole process
//! group, which it alone is in) when the [`Browser`] is dropped.

use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for anything the browser must do; generous so a slow,
/// shared machine never fails a test. Never used as a sleep.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How often [`Page::wait_for`] re-checks the DOM.
const POLL: Duration = Duration::from_millis(25);
/// Page log entries kept (newest win): enough for any one test.
const LOG_MAX: usize = 1000;

/// The flags every test browser runs with: headless, no sandbox (CI runs
/// as root in a container), and nothing that reaches the network on its own.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1280,800",
    // Screenshots as wide as the viewport asked for, on every machine.
    "--hide-scrollbars",
];

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Reply = oneshot::Sender<Result<Value, String>>;

struct Conn {
    sink: tokio::sync::Mutex<Sink>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Reply>>,
    /// (session id, log line) of everything the pages reported.
    log: Mutex<VecDeque<(String, String)>>,
    /// (session id, URL) of every request and websocket a page with
    /// [`Page::record_requests`] opened, the latest LOG_MAX.
    requests: Mutex<VecDeque<(String, String)>>,
}

impl Conn {
    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.sink
            .lock()
            .await
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("CDP {method}: send failed: {e}"));
        match tokio::time::timeout(PATIENCE, rx).await {
            Ok(Ok(Ok(v))) => v,
            Ok(Ok(Err(e))) => panic!("CDP {method} failed: {e}"),
            Ok(Err(_)) => panic!("CDP {method}: the browser connection closed"),
            Err(_) => panic!("CDP {method}: no answer within {PATIENCE:?}"),
        }
    }

    fn on_message(&self, text: &str) {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            if let Some(tx) = self.pending.lock().unwrap().remove(&id) {
                let reply = match msg.get("error") {
                    Some(e) => Err(e.to_string()),
                    None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = tx.send(reply);
            }
            return;
        }
        let session = msg["sessionId"].as_str().unwrap_or_default().to_owned();
        let p = &msg["params"];
        let url = match msg["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => p["request"]["url"].as_str(),
            "Network.webSocketCreated" => p["url"].as_str(),
            _ => None,
        };
        if let Some(url) = url {
            let mut requests = self.requests.lock().unwrap();
            if requests.len() == LOG_MAX {
                requests.pop_front();
            }
            requests.push_back((session, url.to_owned()));
            return;
        }
        let line = match msg["method"].as_str().unwrap_or_default() {
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("exception");
                format!("exception: {text}")
            }
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
            {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| a["description"].to_string())
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    p["type"].as_str().unwrap(),
                    args.join(" ")
                )
            }
            "Log.entryAdded"
                if p["entry"]["level"] == "error" || p["entry"]["level"] == "warning" =>
            {
                format!(
                    "log[{}]: {}",
                    p["entry"]["source"].as_str().unwrap_or("?"),
                    p["entry"]["text"].as_str().unwrap_or("")
                )
            }
            "Inspector.targetCrashed" => "the page crashed".to_owned(),
            _ => return,
        };
        let mut log = self.log.lock().unwrap();
        if log.len() == LOG_MAX {
            log.pop_front();
        }
        log.push_back((session, line));
    }
}

/// A headless Chromium with a fresh profile, killed on drop.
pub struct Browser {
    child: Child,
    conn: Arc<Conn>,
    reader: tokio::task::JoinHandle<()>,
    /// Removed after the browser is gone (fields drop after `drop`).
    _profile: tempfile::TempDir,
}

/// The Chromium binary: `$HOLDFAST_CHROMIUM`, or `chromium` on the `PATH`.
/// Missing, the test fails (`scripts/test-all` installs it), unless
/// skipping was asked for explicitly (see `common::require_tool`).
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOLDFAST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    crate::common::require_tool("chromium", "the browser tests").then(|| PathBuf::from("chromium"))
}

impl Browser {
    /// Starts Chromium, or `None` when it is not installed (outside CI).
    pub async fn launch() -> Option<Self> {
        let binary = find_chromium()?;
        let profile = tempfile::tempdir().expect("profile dir");
        let stderr = std::fs::File::create(profile.path().join("stderr.log")).unwrap();
        let mut command = Command::new(&binary);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Its own process group, so drop can end the renderers and helpers
        // with it (and nothing else).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let endpoint = Self::devtools_endpoint(&mut child, profile.path());
        let (stream, _) = tokio_tungstenite::connect_async(&endpoint)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Chromium at {endpoint}: {e}"));
        let (sink, mut stream) = stream.split();
        let conn = Arc::new(Conn {
            sink: tokio::sync::Mutex::new(sink),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            log: Mutex::new(VecDeque::new()),
            requests: Mutex::new(VecDeque::new()),
        });
        let reader_conn = conn.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(text) = frame {
                    reader_conn.on_message(&text);
                }
            }
            // Closed: fail whoever still waits instead of letting them time out.
            reader_conn.pending.lock().unwrap().clear();
        });
        Some(Self {
            child,
            conn,
            reader,
            _profile: profile,
        })
    }

    /// Chromium writes its DevTools port to `DevToolsActivePort` in the
    /// profile once it listens (port 0 picked a free one).
    fn devtools_endpoint(child: &mut Child, profile: &Path) -> String {
        let file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "chromium exited ({status}) before listening:\n{}",
                    std::fs::read_to_string(profile.join("stderr.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens a new tab with its own viewport.
    pub async fn new_page(&self) -> Page {
        let target = self
            .conn
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await["targetId"]
            .as_str()
            .expect("target id")
            .to_owned();
        let session = self
            .conn
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        let page = Page {
            conn: self.conn.clone(),
            session,
            target,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.cmd(domain, json!({})).await;
        }
        page
    }

    /// Closes the browser politely; drop kills it if this did not work.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.conn.sink.lock().await.send(Message::Text(
                json!({"id": 0, "method": "Browser.close"})
                    .to_string()
                    .into(),
            )),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
        if let Ok(None) = self.child.try_wait() {
            let pgid = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) with a negative pid signals the process group
            // we created for this child at spawn (process_group(0)); it
            // touches no memory of ours.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
    target: String,
}

/// Where a click lands, found by the page itself.
const CLICK_TARGET_JS: &str = r#"(sel) => {
  const el = document.querySelector(sel);
  if (!el) return null;
  el.scrollIntoView({block: "center", inline: "center", behavior: "instant"});
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return null;
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  if (!hit || !(hit === el || el.contains(hit))) return null;
  if (el.disabled || el.closest("fieldset:disabled")) return null;
  return {x, y};
}"#;

impl Page {
    async fn cmd(&self, method: &str, params: Value) -> Value {
        self.conn.send(Some(&self.session), method, params).await
    }

    /// Navigates and waits until the document has loaded.
    pub async fn goto(&self, url: &str) {
        let r = self.cmd("Page.navigate", json!({"url": url})).await;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            panic!("navigating to {url} failed: {e}");
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        )
        .await;
    }

    /// Evaluates `expr` in the page and returns its value (as JSON).
    pub async fn eval(&self, expr: &str) -> Value {
        let r = self
            .cmd(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr:?} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy and returns that value; fails the test
    /// after [`PATIENCE`] saying what was awaited and what the page logged.
    pub async fn wait_for(&self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.eval(expr).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {what} ({expr}); page log: {:#?}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the first element matching `selector` (waits for it).
    pub async fn text(&self, selector: &str) -> String {
        let sel = serde_json::to_string(selector).unwrap();
        self.wait_for(
            &format!("{selector} to exist"),
            &format!("(() => {{ const e = document.querySelector({sel}); return e ? e.textContent : null; }})()"),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the text of `selector` satisfies the JS predicate on `t`
    /// (for example `t === '11 left'`), and returns it.
    pub async fn wait_text(&self, selector: &str, predicate: &str) -> String {
        let sel = serde_json::to_string(selector).unwrap();
        let expr = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             const t = e.textContent.trim(); return ({predicate}) ? (t || ' ') : null; }})()"
        );
        self.wait_for(&format!("{selector} where {predicate}"), &expr)
            .await
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Clicks the middle of `selector` with real mouse events, once it is
    /// visible, enabled, not covered by anything else, and has stopped
    /// moving (a smooth scroll would otherwise carry it away from the point
    /// between finding it and clicking).
    pub async fn click(&self, selector: &str) {
        // Input to a background tab waits for a frame that a hidden tab
        // does not draw: bring this one to the front first.
        self.cmd("Page.bringToFront", json!({})).await;
        let sel = serde_json::to_string(selector).unwrap();
        let find = format!("({CLICK_TARGET_JS})({sel})");
        let what = format!("{selector} to be clickable");
        let mut at = self.wait_for(&what, &find).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            tokio::time::sleep(POLL).await;
            let again = self.wait_for(&what, &find).await;
            if again == at {
                break;
            }
            assert!(Instant::now() < deadline, "{selector} never stopped moving");
            at = again;
        }
        let (x, y) = (at["x"].as_f64().unwrap(), at["y"].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.cmd(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Replaces the value of the input `selector` by typing `text`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        self.click(selector).await;
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({sel}).select()"))
            .await;
        self.cmd("Input.insertText", json!({"text": text})).await;
    }

    /// Sets the viewport (CSS pixels); `mobile` also emulates a phone's
    /// viewport meta handling and touch.
    pub async fn set_viewport(&self, width: u32, height: u32, mobile: bool) {
        self.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
        self.cmd(
            "Emulation.setTouchEmulationEnabled",
            json!({"enabled": mobile}),
        )
        .await;
    }

    /// Emulates `prefers-color-scheme` (`"light"` or `"dark"`).
    pub async fn set_color_scheme(&self, scheme: &str) {
        self.cmd(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Presses and releases one key (`"Tab"`, `"Enter"`, `"Escape"`) with
    /// real key events, as a keyboard user would.
    pub async fn press(&self, key: &str) {
        self.cmd("Page.bringToFront", json!({})).await;
        let (code, vk, text) = match key {
            "Tab" => ("Tab", 9, ""),
            "Enter" => ("Enter", 13, "\r"),
            "Escape" => ("Escape", 27, ""),
            other => panic!("press: no key code for {other:?}"),
        };
        let down = if text.is_empty() {
            "rawKeyDown"
        } else {
            "keyDown"
        };
        for kind in [down, "keyUp"] {
            let mut ev = json!({"type": kind, "key": key, "code": code,
                                "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk});
            if kind == "keyDown" {
                ev["text"] = json!(text);
            }
            self.cmd("Input.dispatchKeyEvent", ev).await;
        }
    }

    /// What shows through a transparent page (an OBS scene, in the docs).
    pub async fn set_backdrop(&self, rgba: (u8, u8, u8, f64)) {
        self.cmd(
            "Emulation.setDefaultBackgroundColorOverride",
            json!({"color": {"r": rgba.0, "g": rgba.1, "b": rgba.2, "a": rgba.3}}),
        )
        .await;
    }

    /// A PNG of the region `(x, y, width, height)` in CSS pixels, or of the
    /// whole page.
    pub async fn screenshot(&self, clip: Option<(f64, f64, f64, f64)>) -> Vec<u8> {
        let (x, y, w, h) = match clip {
            Some(c) => c,
            None => {
                let m = self.cmd("Page.getLayoutMetrics", json!({})).await;
                let size = &m["cssContentSize"];
                (
                    0.0,
                    0.0,
                    size["width"].as_f64().unwrap(),
                    size["height"].as_f64().unwrap(),
                )
            }
        };
        let r = self
            .cmd(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64")
    }

    /// Runs `js` in every document this page loads from now on, before
    /// the page's own scripts (to fake a wrong clock, say).
    pub async fn on_new_document(&self, js: &str) {
        self.cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": js}),
        )
        .await;
    }

    /// Starts recording the URL of every request the page makes (HTTP,
    /// websocket, navigation) for [`Page::request_urls`].
    pub async fn record_requests(&self) {
        self.cmd("Network.enable", json!({})).await;
    }

    /// The URLs this page requested since [`Page::record_requests`].
    pub fn request_urls(&self) -> Vec<String> {
        self.conn
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == self.session)
            .map(|(_, u)| u.clone())
            .collect()
    }

    /// Everything this page reported as an error or warning so far.
    pub fn log(&self) -> Vec<String> {
        self.conn
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == self.session)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Asserts the page logged no error or warning, except lines containing
    /// one of `expected` (a refused HTTP call the test provoked, say).
    pub fn assert_clean_log(&self, expected: &[&str]) {
        let unexpected: Vec<String> = self
            .log()
            .into_iter()
            .filter(|l| !expected.iter().any(|e| l.contains(e)))
            .collect();
        assert!(
            unexpected.is_empty(),
            "the page logged errors: {unexpected:#?}"
        );
    }

    pub async fn close(self) {
        self.conn
            .send(None, "Target.closeTarget", json!({"targetId": self.target}))
            .await;
    }
}
