//! Scenario files: what an event looks like, parsed from TOML and checked.
//!
//! Owns the scenario schema, its limits and its validation. Every error
//! names the file, line and column, because an operator edits these by hand
//! the night before an event. It never talks to the network.
//!
//! ```toml
//! name = "flash-drop"
//! duration_s = 12
//! protocol = "ws-binary"
//!
//! [[sku]]
//! id = "sneaker"
//! total = 200
//! window = "closed"          # opened by the host action below
//!
//! [viewers]
//! count = 1000
//! topics = ["sku:sneaker"]
//!
//! [[host]]
//! at_s = 3
//! action = "open"
//! sku = "sneaker"
//!
//! [[burst]]                  # fires right after the host actions due by then
//! at_s = 3
//! buyers = 500
//! sku = "sneaker"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Cli, Protocol};

/// SKUs per scenario at most: viewers track what they saw in a 64-bit mask.
pub const SKUS_MAX: usize = 64;
/// Run length at most (one hour): a rehearsal, not a soak test.
pub const DURATION_S_MAX: f64 = 3600.0;
/// Viewers at most per scenario (the preflight splits them over processes).
pub const VIEWERS_MAX: u32 = 1_000_000;
/// Buyers per burst at most.
pub const BURST_BUYERS_MAX: u32 = 1_000_000;
/// Arrivals per run at most, summed over executors.
pub const ARRIVALS_MAX: f64 = 50_000_000.0;
/// Bursts per scenario at most (buyer numbers keep 6 bits for the burst; a
/// show with more drops than this is several rehearsals).
pub const BURSTS_MAX: usize = 64;
/// Arrival executors per scenario at most.
pub const ARRIVAL_EXECUTORS_MAX: usize = 16;
/// Lines of a cart at most (the gateway's frames are 4 KiB).
pub const CART_LINES_MAX: usize = 16;
/// Topics per viewer at most (the gateway's default subscriptions_max is 64).
pub const TOPICS_MAX: usize = 64;

/// Encoding of the viewers' websocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Json,
    #[default]
    Binary,
}

/// A whole event rehearsal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The run stops by itself after this many seconds.
    pub duration_s: f64,
    /// Buyers' protocol (`ws-json`, `ws-binary`, `http`); `--protocol` wins.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    #[serde(default, rename = "sku")]
    pub skus: Vec<SkuSpec>,
    #[serde(default)]
    pub viewers: ViewerSpec,
    #[serde(default)]
    pub buyer: BuyerSpec,
    #[serde(default, rename = "host")]
    pub host: Vec<HostAction>,
    #[serde(default, rename = "burst")]
    pub bursts: Vec<BurstSpec>,
    #[serde(default, rename = "arrival")]
    pub arrivals: Vec<ArrivalSpec>,
}

/// A SKU the run creates through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuSpec {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    pub total: u32,
    #[serde(default)]
    pub buyer_limit: u32,
    /// Default 10 s: long enough to pay, short enough that abandoned holds
    /// come back on sale within a rehearsal.
    #[serde(default = "default_hold_ttl_ms")]
    pub hold_ttl_ms: u64,
    #[serde(default)]
    pub show: Option<String>,
    #[serde(default)]
    pub price_minor: u64,
    /// Sale window at creation: `open` (default), `closed`, `paused`, or
    /// `scheduled` with `opens_at_s`.
    #[serde(default = "default_window")]
    pub window: String,
    /// For `scheduled`: seconds after the run start when the server opens it.
    #[serde(default)]
    pub opens_at_s: Option<f64>,
    /// Created by the host during the show at this second instead of before.
    #[serde(default)]
    pub create_at_s: Option<f64>,
    /// Sales channels of the SKU (docs/CHANNELS.md), e.g.
    /// `channels = [{id = "live", quota = 20}, {id = "web", cap = 30}]`.
    /// Buyers of a one-line reservation take turns: each channel, then the
    /// common pool; the audit checks every channel's counts.
    #[serde(default)]
    pub channels: Vec<ChannelSpec>,
}

/// One sales channel of a SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    pub id: String,
    /// Units reserved for it alone (default none: it shares the pool).
    #[serde(default)]
    pub quota: Option<u32>,
    /// Most units it may hold plus sell (default no cap).
    #[serde(default)]
    pub cap: Option<u32>,
}

/// Most channels a SKU has (the server's `CHANNELS_MAX`).
pub const SKU_CHANNELS_MAX: usize = 8;

impl SkuSpec {
    /// The channel a one-line reservation of buyer `n` names: buyers take
    /// turns over the channels and then the common pool (`None`), so every
    /// bucket sells. `None` for a SKU without channels.
    pub fn channel_of_buyer(&self, n: u64) -> Option<usize> {
        let turn = (n % (self.channels.len() as u64 + 1)) as usize;
        (turn < self.channels.len()).then_some(turn)
    }
}

fn default_hold_ttl_ms() -> u64 {
    10_000
}

fn default_window() -> String {
    "open".into()
}

/// The viewers: websocket subscribers watching the counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerSpec {
    #[serde(default)]
    pub count: u32,
    /// `sku:<id>`, `show:<id>` or `all`; ids are the scenario's.
    #[serde(default = "default_topics")]
    pub topics: Vec<String>,
    #[serde(default)]
    pub encoding: Encoding,
    /// Connections are spread over this many seconds from the start, so the
    /// server's accept queue is not the first thing measured.
    #[serde(default = "default_connect_over_s")]
    pub connect_over_s: f64,
}

fn default_topics() -> Vec<String> {
    vec!["all".into()]
}

fn default_connect_over_s() -> f64 {
    2.0
}

impl Default for ViewerSpec {
    fn default() -> Self {
        ViewerSpec {
            count: 0,
            topics: default_topics(),
            encoding: Encoding::Binary,
            connect_over_s: default_connect_over_s(),
        }
    }
}

/// What every buyer does after a successful reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerSpec {
    /// Probability of paying (commit) after the pay delay.
    #[serde(default = "default_commit_probability")]
    pub commit_probability: f64,
    /// Probability of releasing explicitly; the rest abandon and let the
    /// hold expire.
    #[serde(default)]
    pub release_probability: f64,
    /// Uniform pay delay range in ms, `[min, max]`.
    #[serde(default = "default_pay_delay_ms")]
    pub pay_delay_ms: [u64; 2],
    /// Probability of sending the same reserve again with the same
    /// request id; the answer must be the same hold, replayed.
    #[serde(default)]
    pub duplicate_probability: f64,
    /// Retries of a request after a retryable refusal or a lost connection,
    /// always with the same request id.
    #[serde(default = "default_retries_max")]
    pub retries_max: u32,
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Units per line.
    #[serde(default = "default_qty")]
    pub qty: u32,
}

fn default_commit_probability() -> f64 {
    0.8
}
fn default_pay_delay_ms() -> [u64; 2] {
    [200, 1000]
}
fn default_retries_max() -> u32 {
    2
}
fn default_retry_backoff_ms() -> u64 {
    50
}
fn default_qty() -> u32 {
    1
}

impl Default for BuyerSpec {
    fn default() -> Self {
        BuyerSpec {
            commit_probability: default_commit_probability(),
            release_probability: 0.0,
            pay_delay_ms: default_pay_delay_ms(),
            duplicate_probability: 0.0,
            retries_max: default_retries_max(),
            retry_backoff_ms: default_retry_backoff_ms(),
            qty: default_qty(),
        }
    }
}

/// Something the host does during the show, through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAction {
    pub at_s: f64,
    /// `open`, `pause`, `close`, `restock` (needs `qty`) or `adjust` (removes
    /// `qty` available units).
    pub action: String,
    pub sku: String,
    #[serde(default)]
    pub qty: Option<u32>,
}

/// A drop: `buyers` clients connect beforehand and fire together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// Fires at this second, right after every host action due by then has
    /// been answered (so "open the drop, then fire" is two lines, in order).
    pub at_s: f64,
    pub buyers: u32,
    #[serde(default)]
    pub sku: Option<String>,
    /// Several SKUs reserved together ("shop the look"), instead of `sku`.
    #[serde(default)]
    pub cart: Option<Vec<String>>,
}

/// An open-model arrival executor (k6's constant- and ramping-arrival-rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalSpec {
    /// `constant` (needs `rate`, `duration_s`) or `ramping` (needs `stages`).
    pub executor: String,
    #[serde(default)]
    pub start_s: f64,
    /// Arrivals per second (constant).
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Rate at the start of the first stage (ramping; default 0).
    #[serde(default)]
    pub start_rate: f64,
    /// Linear ramps to `target` arrivals/s over `duration_s` each (ramping).
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Each arrival reserves one of these SKUs, picked uniformly.
    pub skus: Vec<String>,
    /// SKUs per reservation (a cart when above 1).
    #[serde(default = "default_cart_size")]
    pub cart_size: u32,
}

fn default_cart_size() -> u32 {
    1
}

/// One linear stage of a ramping executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub target: f64,
    pub duration_s: f64,
}

/// A scenario file that could not be used; the message names file:line:col.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

/// 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Line of the `n`-th (0-based) `[[table]]` header, for errors found after
/// parsing (an unknown SKU in a burst, say).
fn line_of_table(src: &str, table: &str, n: usize) -> Option<usize> {
    let header = format!("[[{table}]]");
    src.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(&header))
        .nth(n)
        .map(|(i, _)| i + 1)
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: cannot read: {e}", path.display())))?;
        Scenario::parse(&src, &path.display().to_string())
    }

    /// Parses and validates scenario text; `origin` names it in errors.
    pub fn parse(src: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(src).map_err(|e| {
            let (line, col) = e.span().map_or((1, 1), |s| line_col(src, s.start));
            let text = src.lines().nth(line - 1).unwrap_or("");
            ScenarioError(format!(
                "{origin}:{line}:{col}: {}\n  {line} | {text}",
                e.message().trim()
            ))
        })?;
        scenario.validate().map_err(|(table, n, msg)| {
            let at = table
                .and_then(|t| line_of_table(src, t, n))
                .map_or(String::new(), |l| format!("{l}:"));
            ScenarioError(format!("{origin}:{at} {msg}"))
        })?;
        Ok(scenario)
    }

    /// Validates again after command-line overrides (no line to name then).
    pub fn revalidate(&self) -> Result<(), ScenarioError> {
        self.validate().map_err(|(table, n, msg)| {
            ScenarioError(match table {
                Some(t) => format!("[[{t}]] #{}: {msg}", n + 1),
                None => msg,
            })
        })
    }

    /// The single drop built from flags when no scenario file is given.
    pub fn from_flags(cli: &Cli) -> Scenario {
        let viewers = cli.viewers.unwrap_or(100);
        let burst = cli.burst.unwrap_or(100);
        let duration_s = cli.duration_s.unwrap_or(10.0);
        // Viewers connect over the first 2 s; the drop opens at 3 s so the
        // burst meets a warm server and every viewer is watching.
        let open_at_s = 3.0_f64.min(duration_s / 3.0);
        let mut s = Scenario {
            name: "flags".into(),
            description: "one drop built from command-line flags".into(),
            duration_s,
            protocol: None,
            skus: vec![SkuSpec {
                id: "drop".into(),
                title: Some("Flag-built drop".into()),
                total: cli.stock,
                buyer_limit: 0,
                hold_ttl_ms: default_hold_ttl_ms(),
                show: Some("live".into()),
                price_minor: 0,
                window: "closed".into(),
                opens_at_s: None,
                create_at_s: None,
                channels: Vec::new(),
            }],
            viewers: ViewerSpec {
                count: viewers,
                topics: vec!["show:live".into()],
                encoding: Encoding::Binary,
                connect_over_s: open_at_s * 2.0 / 3.0,
            },
            buyer: BuyerSpec::default(),
            host: vec![HostAction {
                at_s: open_at_s,
                action: "open".into(),
                sku: "drop".into(),
                qty: None,
            }],
            bursts: vec![],
            arrivals: vec![],
        };
        if burst > 0 {
            s.bursts.push(BurstSpec {
                at_s: open_at_s,
                buyers: burst,
                sku: Some("drop".into()),
                cart: None,
            });
        }
        if let Some(rate) = cli.rate {
            s.arrivals.push(ArrivalSpec {
                executor: "constant".into(),
                start_s: open_at_s,
                rate: Some(rate),
                duration_s: Some((duration_s - open_at_s - 1.0).max(0.5)),
                start_rate: 0.0,
                stages: vec![],
                skus: vec!["drop".into()],
                cart_size: 1,
            });
        }
        s
    }

    /// Applies command-line overrides (viewers, burst size, rate, duration).
    pub fn apply_overrides(&mut self, cli: &Cli) {
        if let Some(v) = cli.viewers {
            self.viewers.count = v;
        }
        if let Some(b) = cli.burst {
            for burst in &mut self.bursts {
                burst.buyers = b;
            }
        }
        if let Some(r) = cli.rate {
            for a in &mut self.arrivals {
                if a.executor == "constant" {
                    a.rate = Some(r);
                }
            }
        }
        if let Some(d) = cli.duration_s {
            self.duration_s = d;
        }
        if let Some(p) = cli.protocol {
            self.protocol = Some(p);
        }
    }

    /// The same event with `factor` times the buyers: burst sizes and
    /// arrival rates scale, stock and viewers do not (more demand for the
    /// same drop is what a bigger audience means).
    pub fn scaled(&self, factor: f64) -> Scenario {
        let mut s = self.clone();
        for b in &mut s.bursts {
            b.buyers = ((b.buyers as f64 * factor).round() as u32).max(1);
        }
        for a in &mut s.arrivals {
            a.rate = a.rate.map(|r| r * factor);
            a.start_rate *= factor;
            for st in &mut a.stages {
                st.target *= factor;
            }
        }
        s
    }

    /// Appends `suffix` to every SKU id and show name (and the topics naming
    /// them), so each run works on fresh stock and repeated runs against one
    /// deployment never share counts.
    pub fn with_id_suffix(&self, suffix: &str) -> Scenario {
        let mut s = self.clone();
        let sku = |id: &mut String| id.push_str(suffix);
        for k in &mut s.skus {
            sku(&mut k.id);
            if let Some(show) = &mut k.show {
                show.push_str(suffix);
            }
        }
        for t in &mut s.viewers.topics {
            if t.starts_with("sku:") || t.starts_with("show:") {
                t.push_str(suffix);
            }
        }
        for h in &mut s.host {
            sku(&mut h.sku);
        }
        for b in &mut s.bursts {
            b.sku.iter_mut().for_each(sku);
            b.cart.iter_mut().flatten().for_each(sku);
        }
        for a in &mut s.arrivals {
            a.skus.iter_mut().for_each(sku);
        }
        s
    }

    /// Index of a SKU id in `skus`.
    pub fn sku_index(&self, id: &str) -> Option<usize> {
        self.skus.iter().position(|k| k.id == id)
    }

    /// Units that could ever be on sale for SKU `i`: its total plus every
    /// restock. Reservations beyond this are an oversell whatever the timing.
    pub fn stock_ever(&self, i: usize) -> u64 {
        let id = &self.skus[i].id;
        let restocked: u64 = self
            .host
            .iter()
            .filter(|h| &h.sku == id && h.action == "restock")
            .map(|h| h.qty.unwrap_or(0) as u64)
            .sum();
        self.skus[i].total as u64 + restocked
    }

    /// Buyer protocol in force.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::WsBinary)
    }

    /// Total arrivals of one executor (integral of its rate).
    pub fn arrival_count(a: &ArrivalSpec) -> f64 {
        match a.executor.as_str() {
            "constant" => a.rate.unwrap_or(0.0) * a.duration_s.unwrap_or(0.0),
            _ => {
                let mut from = a.start_rate;
                let mut n = 0.0;
                for st in &a.stages {
                    n += (from + st.target) / 2.0 * st.duration_s;
                    from = st.target;
                }
                n
            }
        }
    }

    /// How long one executor runs, in seconds from its `start_s`.
    pub fn arrival_duration_s(a: &ArrivalSpec) -> f64 {
        match a.executor.as_str() {
            "constant" => a.duration_s.unwrap_or(0.0),
            _ => a.stages.iter().map(|st| st.duration_s).sum(),
        }
    }

    /// One executor's rate (arrivals/s) at `t_s` seconds after the run's
    /// start; 0 outside its span.
    pub fn arrival_rate_at(a: &ArrivalSpec, t_s: f64) -> f64 {
        let mut at = t_s - a.start_s;
        if at < 0.0 || at >= Scenario::arrival_duration_s(a) {
            return 0.0;
        }
        if a.executor == "constant" {
            return a.rate.unwrap_or(0.0);
        }
        let mut from = a.start_rate;
        for st in &a.stages {
            if at < st.duration_s {
                return from + (st.target - from) * at / st.duration_s;
            }
            at -= st.duration_s;
            from = st.target;
        }
        0.0
    }

    /// Peak arrival rate of one executor.
    pub fn arrival_peak(a: &ArrivalSpec) -> f64 {
        match a.executor.as_str() {
            "constant" => a.rate.unwrap_or(0.0),
            _ => a
                .stages
                .iter()
                .map(|s| s.target)
                .fold(a.start_rate, f64::max),
        }
    }

    /// Checks everything the schema cannot: references, ranges, limits.
    /// The error carries the table and its index so the caller can find the
    /// line.
    fn validate(&self) -> Result<(), (Option<&'static str>, usize, String)> {
        let top = |m: String| (None, 0, m);
        if !(self.duration_s > 0.0 && self.duration_s <= DURATION_S_MAX) {
            return Err(top(format!(
                "duration_s = {} is outside (0, {DURATION_S_MAX}]",
                self.duration_s
            )));
        }
        if self.skus.is_empty() {
            return Err(top(
                "no [[sku]]: a scenario needs at least one SKU to sell".into()
            ));
        }
        if self.skus.len() > SKUS_MAX {
            return Err(top(format!("{} SKUs, at most {SKUS_MAX}", self.skus.len())));
        }
        for (i, k) in self.skus.iter().enumerate() {
            let e = |m: String| (Some("sku"), i, m);
            if k.id.is_empty()
                || k.id.len() > 64
                || !k
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(e(format!(
                    "sku id {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                    k.id
                )));
            }
            if self.skus[..i].iter().any(|o| o.id == k.id) {
                return Err(e(format!("sku id {:?} is defined twice", k.id)));
            }
            if !["open", "closed", "paused", "scheduled"].contains(&k.window.as_str()) {
                return Err(e(format!(
                    "window = {:?}: expected open, closed, paused or scheduled",
                    k.window
                )));
            }
            if (k.window == "scheduled") != k.opens_at_s.is_some() {
                return Err(e(
                    "window = \"scheduled\" goes with opens_at_s, and only it".into(),
                ));
            }
            if k.hold_ttl_ms == 0 {
                return Err(e("hold_ttl_ms must be above 0".into()));
            }
            if k.channels.len() > SKU_CHANNELS_MAX {
                return Err(e(format!(
                    "channels: {} channels, at most {SKU_CHANNELS_MAX}",
                    k.channels.len()
                )));
            }
            for (j, c) in k.channels.iter().enumerate() {
                if c.id.is_empty()
                    || c.id.len() > 32
                    || !c
                        .id
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
                {
                    return Err(e(format!(
                        "channels[{j}].id {:?} must be 1-32 characters of [A-Za-z0-9._-]",
                        c.id
                    )));
                }
                if k.channels[..j].iter().any(|o| o.id == c.id) {
                    return Err(e(format!("channels[{j}].id {:?} is listed twice", c.id)));
                }
            }
            let quotas: u64 = k
                .channels
                .iter()
                .map(|c| u64::from(c.quota.unwrap_or(0)))
                .sum();
            if quotas > u64::from(k.total) {
                return Err(e(format!(
                    "channels: quotas add up to {quotas}, above the total of {}",
                    k.total
                )));
            }
        }
        let known = |id: &str| self.skus.iter().any(|k| k.id == id);
        let v = &self.viewers;
        if v.count > VIEWERS_MAX {
            return Err(top(format!(
                "viewers.count = {} is above {VIEWERS_MAX}",
                v.count
            )));
        }
        if v.topics.is_empty() || v.topics.len() > TOPICS_MAX {
            return Err(top(format!(
                "viewers.topics needs 1 to {TOPICS_MAX} topics"
            )));
        }
        for t in &v.topics {
            let ok = t == "all"
                || t.strip_prefix("sku:").is_some_and(known)
                || t.strip_prefix("show:")
                    .is_some_and(|s| self.skus.iter().any(|k| k.show.as_deref() == Some(s)));
            if !ok {
                return Err(top(format!(
                    "viewers.topics: {t:?} names no SKU or show of this scenario (use sku:<id>, show:<id> or all)"
                )));
            }
        }
        if v.count > 0 && !(v.connect_over_s >= 0.0 && v.connect_over_s < self.duration_s) {
            return Err(top(
                "viewers.connect_over_s must be at least 0 and below duration_s".into(),
            ));
        }
        let b = &self.buyer;
        let prob = |p: f64| (0.0..=1.0).contains(&p);
        if !prob(b.commit_probability)
            || !prob(b.release_probability)
            || !prob(b.duplicate_probability)
            || b.commit_probability + b.release_probability > 1.0
        {
            return Err(top(
                "buyer probabilities must be in [0, 1] and commit + release at most 1".into(),
            ));
        }
        if b.pay_delay_ms[0] > b.pay_delay_ms[1] {
            return Err(top("buyer.pay_delay_ms = [min, max] with min <= max".into()));
        }
        if b.qty == 0 || b.retries_max > 10 {
            return Err(top(
                "buyer.qty must be at least 1 and buyer.retries_max at most 10".into(),
            ));
        }
        for (i, h) in self.host.iter().enumerate() {
            let e = |m: String| (Some("host"), i, m);
            if !known(&h.sku) {
                return Err(e(format!("sku {:?} is not defined by any [[sku]]", h.sku)));
            }
            if !(0.0..self.duration_s).contains(&h.at_s) {
                return Err(e(format!(
                    "at_s = {} is outside the run [0, {})",
                    h.at_s, self.duration_s
                )));
            }
            match h.action.as_str() {
                "open" | "pause" | "close" => {}
                "restock" | "adjust" if h.qty.is_some_and(|q| q > 0) => {}
                "restock" | "adjust" => {
                    return Err(e(format!("action = {:?} needs qty > 0", h.action)));
                }
                other => {
                    return Err(e(format!(
                        "action = {other:?}: expected open, pause, close, restock or adjust"
                    )));
                }
            }
        }
        if self.bursts.len() > BURSTS_MAX || self.arrivals.len() > ARRIVAL_EXECUTORS_MAX {
            return Err(top(format!(
                "at most {BURSTS_MAX} [[burst]] and {ARRIVAL_EXECUTORS_MAX} [[arrival]] tables"
            )));
        }
        for (i, bu) in self.bursts.iter().enumerate() {
            let e = |m: String| (Some("burst"), i, m);
            if bu.buyers == 0 || bu.buyers > BURST_BUYERS_MAX {
                return Err(e(format!(
                    "buyers = {} is outside [1, {BURST_BUYERS_MAX}]",
                    bu.buyers
                )));
            }
            if !(0.0..self.duration_s).contains(&bu.at_s) {
                return Err(e(format!(
                    "at_s = {} is outside the run [0, {})",
                    bu.at_s, self.duration_s
                )));
            }
            let lines = self.burst_lines(bu);
            if lines.is_empty() || (bu.sku.is_some() && bu.cart.is_some()) {
                return Err(e("give either sku or cart".into()));
            }
            if lines.len() > CART_LINES_MAX {
                return Err(e(format!(
                    "cart has {} lines, at most {CART_LINES_MAX}",
                    lines.len()
                )));
            }
            if let Some(bad) = lines.iter().find(|l| !known(l)) {
                return Err(e(format!("sku {bad:?} is not defined by any [[sku]]")));
            }
        }
        let mut arrivals = 0.0;
        for (i, a) in self.arrivals.iter().enumerate() {
            let e = |m: String| (Some("arrival"), i, m);
            match a.executor.as_str() {
                "constant" => {
                    if !a.rate.is_some_and(|r| r > 0.0) || !a.duration_s.is_some_and(|d| d > 0.0) {
                        return Err(e(
                            "executor = \"constant\" needs rate > 0 and duration_s > 0".into(),
                        ));
                    }
                }
                "ramping" => {
                    if a.stages.is_empty()
                        || a.stages
                            .iter()
                            .any(|s| s.target < 0.0 || s.duration_s <= 0.0)
                        || a.start_rate < 0.0
                    {
                        return Err(e("executor = \"ramping\" needs stages = [{ target = <rate>, duration_s = <s> }, ...]".into()));
                    }
                }
                other => {
                    return Err(e(format!(
                        "executor = {other:?}: expected constant or ramping"
                    )));
                }
            }
            if a.skus.is_empty()
                || a.cart_size == 0
                || a.cart_size as usize > a.skus.len().min(CART_LINES_MAX)
            {
                return Err(e(
                    "skus must be non-empty and 1 <= cart_size <= len(skus)".into()
                ));
            }
            if let Some(bad) = a.skus.iter().find(|s| !known(s)) {
                return Err(e(format!("sku {bad:?} is not defined by any [[sku]]")));
            }
            if a.start_s < 0.0 || a.start_s >= self.duration_s {
                return Err(e(format!("start_s = {} is outside the run", a.start_s)));
            }
            // Cutting an executor short would run less load than planned
            // and report it as if it were the plan.
            let end_s = a.start_s + Scenario::arrival_duration_s(a);
            if end_s > self.duration_s + 1e-9 {
                return Err(e(format!(
                    "this executor runs until {end_s} s (start_s {} + {} s), past the run's duration_s = {}: \
                     shorten it or lengthen the run",
                    a.start_s,
                    Scenario::arrival_duration_s(a),
                    self.duration_s
                )));
            }
            arrivals += Scenario::arrival_count(a);
        }
        if arrivals > ARRIVALS_MAX {
            return Err(top(format!(
                "{arrivals:.0} arrivals in all, at most {ARRIVALS_MAX}"
            )));
        }
        Ok(())
    }

    /// The SKUs one burst buyer reserves.
    pub fn burst_lines(&self, b: &BurstSpec) -> Vec<String> {
        match (&b.sku, &b.cart) {
            (Some(s), None) => vec![s.clone()],
            (None, Some(c)) => c.clone(),
            _ => vec![],
        }
    }

    /// Connections the plan opens, by kind: (viewers, burst buyers).
    pub fn connections(&self) -> (u64, u64) {
        (
            self.viewers.count as u64,
            self.bursts.iter().map(|b| b.buyers as u64).sum(),
        )
    }
}

/// Arrival times (seconds from the run start) of one executor, in order.
/// Arrival `k` is the moment the integral of the rate reaches `k + 0.5`,
/// which spaces a constant rate evenly and starts half a gap in.
pub fn arrival_times(a: &ArrivalSpec) -> impl Iterator<Item = f64> + '_ {
    // Piecewise-linear rate: segments (start_time, duration, r0, r1).
    let segs: Vec<(f64, f64, f64, f64)> = match a.executor.as_str() {
        "constant" => vec![(
            0.0,
            a.duration_s.unwrap_or(0.0),
            a.rate.unwrap_or(0.0),
            a.rate.unwrap_or(0.0),
        )],
        _ => {
            let mut t = 0.0;
            let mut from = a.start_rate;
            a.stages
                .iter()
                .map(|s| {
                    let seg = (t, s.duration_s, from, s.target);
                    t += s.duration_s;
                    from = s.target;
                    seg
                })
                .collect()
        }
    };
    let start = a.start_s;
    let mut seg_i = 0;
    let mut done_before = 0.0; // arrivals integrated over earlier segments
    let mut k = 0u64;
    std::iter::from_fn(move || {
        let want = k as f64 + 0.5;
        while seg_i < segs.len() {
            let (t0, d, r0, r1) = segs[seg_i];
            let in_seg = (r0 + r1) / 2.0 * d;
            let x = want - done_before;
            if x <= in_seg && in_seg > 0.0 {
                // Solve r0 t + (r1 - r0) t^2 / (2 d) = x for t in [0, d].
                let a2 = (r1 - r0) / (2.0 * d);
                let t = if a2.abs() < 1e-12 {
                    x / r0
                } else {
                    (-r0 + (r0 * r0 + 4.0 * a2 * x).max(0.0).sqrt()) / (2.0 * a2)
                };
                k += 1;
                return Some(start + t0 + t.clamp(0.0, d));
            }
            done_before += in_seg;
            seg_i += 1;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
duration_s = 10

[[sku]]
id = "a"
total = 5
window = "closed"

[[sku]]
id = "b"
total = 7
show = "s"

[viewers]
count = 3
topics = ["sku:a", "show:s"]

[[host]]
at_s = 1
action = "open"
sku = "a"

[[host]]
at_s = 2
action = "restock"
sku = "a"
qty = 4

[[burst]]
at_s = 1
buyers = 10
cart = ["a", "b"]

[[arrival]]
executor = "ramping"
stages = [{ target = 10, duration_s = 2 }, { target = 0, duration_s = 2 }]
skus = ["a", "b"]
"#;

    #[test]
    fn parses_a_full_scenario() {
        let s = Scenario::parse(GOOD, "good.toml").unwrap();
        assert_eq!(s.skus.len(), 2);
        assert_eq!(s.stock_ever(0), 9);
        assert_eq!(s.stock_ever(1), 7);
        assert_eq!(s.burst_lines(&s.bursts[0]), vec!["a", "b"]);
        assert_eq!(s.connections(), (3, 10));
        assert_eq!(Scenario::arrival_count(&s.arrivals[0]), 20.0);
        let t = s.with_id_suffix("-x");
        assert_eq!(t.viewers.topics, vec!["sku:a-x", "show:s-x"]);
        assert_eq!(
            t.bursts[0].cart.as_ref().unwrap(),
            &vec!["a-x".to_string(), "b-x".to_string()]
        );
        assert_eq!(t.scaled(1.5).bursts[0].buyers, 15);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let bad = GOOD.replace("buyers = 10", "buyers = = 10");
        let err = Scenario::parse(&bad, "bad.toml").unwrap_err().to_string();
        let line = bad.lines().position(|l| l.contains("= = 10")).unwrap() + 1;
        assert!(err.starts_with(&format!("bad.toml:{line}:")), "{err}");
        assert!(err.contains("buyers = = 10"), "{err}");
    }

    #[test]
    fn unknown_fields_name_the_line() {
        let bad = GOOD.replace("buyers = 10", "byers = 10");
        let err = Scenario::parse(&bad, "bad.toml").unwrap_err().to_string();
        let line = bad.lines().position(|l| l.contains("byers = 10")).unwrap() + 1;
        assert!(err.starts_with(&format!("bad.toml:{line}:")), "{err}");
        assert!(err.contains("byers"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_table_line() {
        let bad = GOOD.replace("cart = [\"a\", \"b\"]", "cart = [\"a\", \"zz\"]");
        let err = Scenario::parse(&bad, "bad.toml").unwrap_err().to_string();
        let line = bad.lines().position(|l| l.contains("[[burst]]")).unwrap() + 1;
        assert!(err.starts_with(&format!("bad.toml:{line}:")), "{err}");
        assert!(err.contains("\"zz\""), "{err}");
        for (from, to, needle) in [
            ("duration_s = 10", "duration_s = 0", "duration_s"),
            ("action = \"open\"", "action = \"opne\"", "opne"),
            (
                "topics = [\"sku:a\", \"show:s\"]",
                "topics = [\"sku:nope\"]",
                "sku:nope",
            ),
            (
                "executor = \"ramping\"",
                "executor = \"poisson\"",
                "poisson",
            ),
        ] {
            let err = Scenario::parse(&GOOD.replace(from, to), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn an_executor_running_past_the_run_is_an_error_not_cut() {
        let src = "name = \"x\"\nduration_s = 10\n[[sku]]\nid = \"a\"\ntotal = 5\n\n\
                   [[arrival]]\nexecutor = \"constant\"\nstart_s = 8\nrate = 10\nduration_s = 5\nskus = [\"a\"]\n";
        let err = Scenario::parse(src, "x.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml:7:"),
            "names the [[arrival]] line: {err}"
        );
        assert!(err.contains("runs until 13 s"), "{err}");
        assert!(err.contains("past the run's duration_s = 10"), "{err}");
        // Ending exactly at the end is fine.
        assert!(Scenario::parse(&src.replace("start_s = 8", "start_s = 5"), "x.toml").is_ok());
        let ramp = src.replace("\"constant\"", "\"ramping\"").replace(
            "rate = 10\nduration_s = 5",
            "stages = [{ target = 10, duration_s = 1 }, { target = 0, duration_s = 2 }]",
        );
        assert!(
            Scenario::parse(&ramp, "x.toml")
                .unwrap_err()
                .to_string()
                .contains("runs until 11 s")
        );
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_from_start() {
        let a = ArrivalSpec {
            executor: "constant".into(),
            start_s: 1.0,
            rate: Some(4.0),
            duration_s: Some(1.0),
            start_rate: 0.0,
            stages: vec![],
            skus: vec!["a".into()],
            cart_size: 1,
        };
        let t: Vec<f64> = arrival_times(&a).collect();
        assert_eq!(t, vec![1.125, 1.375, 1.625, 1.875]);
    }

    #[test]
    fn ramping_arrivals_follow_the_rate() {
        let a = ArrivalSpec {
            executor: "ramping".into(),
            start_s: 0.0,
            rate: None,
            duration_s: None,
            start_rate: 0.0,
            stages: vec![
                Stage {
                    target: 100.0,
                    duration_s: 2.0,
                },
                Stage {
                    target: 100.0,
                    duration_s: 1.0,
                },
            ],
            skus: vec!["a".into()],
            cart_size: 1,
        };
        let t: Vec<f64> = arrival_times(&a).collect();
        assert_eq!(t.len(), 200); // 100 in the ramp, 100 at full rate
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // Under a linear ramp from 0, a quarter of the ramp's arrivals come
        // in its first half.
        let first_second = t.iter().filter(|&&x| x < 1.0).count();
        assert!((24..=26).contains(&first_second), "{first_second}");
        assert!(t.iter().all(|&x| (0.0..=3.0).contains(&x)));
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// Every example scenario shipped with the crate parses and validates.
    #[test]
    fn shipped_scenarios_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(
            n >= 3,
            "flash-drop, livestream-3-drops and ci-smoke at least"
        );
    }
}
