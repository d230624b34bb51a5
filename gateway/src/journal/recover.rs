//! Recovery at start: read everything holdfast keeps in Redis back into a
//! [`SavedState`] for `Engine::restore`, plus display data, buyer names, the
//! id-hash key, and a fresh incarnation number for hold ids.
//!
//! A Redis with no holdfast journal record is a fresh start (the record is
//! created). A Redis with holdfast data but no journal record is refused:
//! it was left half-written and starting over it would silently diverge.

use super::conn::Conn;
use super::keys::{
    ChannelRecord, HoldRecord, Keys, RequestRecord, parse_buyer_field, parse_request_field,
    parse_sales_field,
};
use crate::protocol::SkuMeta;
use anyhow::{Context as _, anyhow, bail};
use holdfast_engine::limits::INCARNATIONS;
use holdfast_engine::{
    BuyerId, Counts, HoldId, RequestId, SaleWindow, SavedBuyer, SavedHold, SavedLine, SavedRequest,
    SavedSku, SavedState, SkuSettings,
};
use redis::AsyncCommands;
use std::collections::{BTreeMap, HashMap};

/// Everything read from Redis at start.
#[derive(Debug)]
pub struct Loaded {
    pub state: SavedState,
    pub metas: Vec<(String, SkuMeta)>,
    /// Show statistics per SKU: counters and sales buckets.
    pub stats: Vec<crate::stats::Saved>,
    pub names: Vec<(BuyerId, String)>,
    /// Remembered request answers (also in `state.requests`).
    pub requests: Vec<(u64, RequestRecord)>,
    pub key: (u64, u64),
    pub incarnation: u16,
    /// No holdfast data was there: nothing to restore.
    pub fresh: bool,
}

fn field<T: std::str::FromStr>(
    h: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> anyhow::Result<T> {
    h.get(name)
        .ok_or_else(|| anyhow!("{what}: field {name} missing"))?
        .parse()
        .map_err(|_| anyhow!("{what}: field {name} is not a number"))
}

pub fn parse_key(hex: &str) -> Option<(u64, u64)> {
    if hex.len() != 32 {
        return None;
    }
    Some((
        u64::from_str_radix(&hex[..16], 16).ok()?,
        u64::from_str_radix(&hex[16..], 16).ok()?,
    ))
}

pub fn format_key(key: (u64, u64)) -> String {
    format!("{:016x}{:016x}", key.0, key.1)
}

/// Reads holdfast's state, or initialises a fresh journal record.
pub async fn load(
    con: &mut Conn,
    keys: &Keys,
    node: u8,
    fresh_key: (u64, u64),
) -> anyhow::Result<Loaded> {
    let journal: HashMap<String, String> = con
        .hgetall(keys.journal())
        .await
        .context("reading the journal record")?;
    // No `seq` yet: a fresh start (a cluster node's record may already
    // hold its ownership `epoch`, written when it joined).
    if !journal.contains_key("seq") {
        let skus: usize = con.hlen(keys.catalog()).await?;
        if skus > 0 {
            bail!(
                "Redis holds {skus} holdfast SKUs under {} but no journal record {}: it was left half-written; \
                 refusing to start over it (inspect it, or delete the prefix's keys to start empty)",
                keys.catalog(),
                keys.journal()
            );
        }
        let _: () = con
            .hset_multiple(
                keys.journal(),
                &[
                    ("seq", "0".to_string()),
                    ("incarnation", "1".to_string()),
                    ("hash_key", format_key(fresh_key)),
                    ("node", node.to_string()),
                ],
            )
            .await?;
        return Ok(Loaded {
            state: SavedState::default(),
            metas: Vec::new(),
            stats: Vec::new(),
            names: Vec::new(),
            requests: Vec::new(),
            key: fresh_key,
            incarnation: 1,
            fresh: true,
        });
    }
    let last_seq: u64 = field(&journal, "seq", "journal record")?;
    let key = journal
        .get("hash_key")
        .and_then(|k| parse_key(k))
        .ok_or_else(|| anyhow!("journal record: hash_key missing or malformed"))?;
    let incarnation: u64 = con.hincr(keys.journal(), "incarnation", 1).await?;
    let incarnation = (incarnation % u64::from(INCARNATIONS)) as u16;

    let catalog: HashMap<String, u32> = con.hgetall(keys.catalog()).await?;
    let mut order: Vec<(u32, String)> = catalog.into_iter().map(|(id, idx)| (idx, id)).collect();
    order.sort();
    let mut state = SavedState {
        last_seq,
        ..SavedState::default()
    };
    let mut metas = Vec::new();
    let mut stats = Vec::new();
    let mut holds: BTreeMap<u64, Vec<(String, HoldRecord)>> = BTreeMap::new();
    // Each SKU's channel ids in order: hold records name them by place.
    let mut sku_channels: HashMap<String, Vec<String>> = HashMap::new();
    for (_, id) in &order {
        let what = format!("sku {id}");
        let h: HashMap<String, String> = con.hgetall(keys.sku(id)).await?;
        if h.is_empty() {
            bail!(
                "{what}: listed in {} but {} is missing",
                keys.catalog(),
                keys.sku(id)
            );
        }
        let counts = Counts {
            available: field(&h, "available", &what)?,
            held: field(&h, "held", &what)?,
            sold: field(&h, "sold", &what)?,
        };
        let total: u32 = field(&h, "total", &what)?;
        if counts.total() != total {
            bail!(
                "{what}: available {} + held {} + sold {} != total {total}",
                counts.available,
                counts.held,
                counts.sold
            );
        }
        let window = match h.get("window").map(String::as_str) {
            Some("open") => SaleWindow::Open,
            Some("paused") => SaleWindow::Paused,
            Some("closed") => SaleWindow::Closed,
            Some("scheduled") => SaleWindow::Scheduled {
                opens_at_ms: field(&h, "opens_at_ms", &what)?,
            },
            other => bail!("{what}: unknown window {other:?}"),
        };
        let settings = SkuSettings {
            buyer_limit: field(&h, "buyer_limit", &what)?,
            hold_ttl_ms: field(&h, "hold_ttl_ms", &what)?,
            hold_lifetime_max_ms: field(&h, "hold_lifetime_max_ms", &what)?,
            order_units_max: field(&h, "order_units_max", &what)?,
        };
        if let Some(json) = h.get("meta").filter(|j| !j.is_empty()) {
            let meta: SkuMeta =
                serde_json::from_str(json).with_context(|| format!("{what}: meta"))?;
            metas.push((id.clone(), meta));
        }
        // Statistics never stop a start: a record that does not parse is
        // reported and counting starts again for that SKU.
        if let Some(json) = h.get("stats").filter(|j| !j.is_empty()) {
            match serde_json::from_str::<crate::stats::Counters>(json) {
                Ok(counters) => {
                    let raw: HashMap<String, u32> = con.hgetall(keys.sales(id)).await?;
                    let (mut sales, mut channel_sales) = (Vec::new(), Vec::new());
                    for (field, units) in raw {
                        match parse_sales_field(&field) {
                            Some((None, b)) => sales.push((b, units)),
                            Some((Some(channel), b)) => channel_sales.push((channel, b, units)),
                            None => {}
                        }
                    }
                    stats.push(crate::stats::Saved {
                        sku: id.clone(),
                        counters,
                        sales,
                        channel_sales,
                    });
                }
                Err(e) => {
                    tracing::warn!(sku = %id, error = %e, "show statistics unreadable: counting again")
                }
            }
        }
        let channels: Vec<ChannelRecord> = match h.get("channels").filter(|j| !j.is_empty()) {
            Some(json) => {
                serde_json::from_str(json).with_context(|| format!("{what}: channels"))?
            }
            None => Vec::new(),
        };
        let channel_ids: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
        sku_channels.insert(id.clone(), channel_ids);
        state.skus.push(SavedSku {
            id: id.clone(),
            counts,
            settings,
            window,
            channels: channels.iter().map(super::mirror::saved_channel).collect(),
        });

        let lines: HashMap<String, Vec<u8>> = con.hgetall(keys.holds(id)).await?;
        for (field_name, bytes) in lines {
            let record = HoldRecord::decode(&bytes)
                .ok_or_else(|| anyhow!("{what}: hold record {field_name} is malformed"))?;
            holds
                .entry(record.hold)
                .or_default()
                .push((id.clone(), record));
        }
        let buyers: HashMap<String, u32> = con.hgetall(keys.buyers(id)).await?;
        for (b, units) in buyers {
            let buyer =
                parse_buyer_field(&b).ok_or_else(|| anyhow!("{what}: buyer field {b:?}"))?;
            state.buyers.push(SavedBuyer {
                sku: id.clone(),
                buyer,
                units,
            });
        }
    }
    for (raw, mut lines) in holds {
        lines.sort_by_key(|(_, r)| r.line);
        let hold = HoldId::from_raw(raw).ok_or_else(|| anyhow!("hold {raw:x}: not a hold id"))?;
        let first = lines[0].1;
        if lines.len() != first.lines as usize {
            bail!(
                "hold {hold}: {} of {} lines stored (a torn cart)",
                lines.len(),
                first.lines
            );
        }
        state.holds.push(SavedHold {
            hold,
            buyer: BuyerId(first.buyer),
            deadline_ms: first.deadline_ms,
            latest_ms: first.latest_ms,
            lines: lines
                .into_iter()
                .map(|(sku, r)| {
                    let channel = match r.channel {
                        0 => None,
                        c => Some(
                            sku_channels
                                .get(&sku)
                                .and_then(|ids| ids.get(usize::from(c - 1)))
                                .cloned()
                                .ok_or_else(|| anyhow!("hold {hold}: unknown channel #{c}"))?,
                        ),
                    };
                    Ok(SavedLine {
                        sku,
                        qty: r.qty,
                        counted: r.counted,
                        channel,
                        quota: r.quota,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        });
    }
    let names: HashMap<String, String> = con.hgetall(keys.buyer_names()).await?;
    let names = names
        .into_iter()
        .filter_map(|(k, v)| Some((parse_buyer_field(&k)?, v)))
        .collect();
    let requests = load_requests(con, keys).await?;
    state.requests = requests
        .iter()
        .map(|(request, r)| SavedRequest {
            request: RequestId(*request),
            fingerprint: r.fingerprint,
            outcome: r.outcome,
            deadline_ms: r.deadline_ms,
            aux: r.aux,
        })
        .collect();
    Ok(Loaded {
        state,
        metas,
        stats,
        names,
        requests,
        key,
        incarnation,
        fresh: false,
    })
}

/// Request buckets read per pipeline at start.
const REQUEST_BUCKETS_PER_PIPELINE: usize = 1000;

/// Every remembered request answer still in Redis: SCAN for the request
/// buckets, then `HGETALL` them, pipelined. A request answered again (after
/// a re-write) keeps its newest answer.
async fn load_requests(con: &mut Conn, keys: &Keys) -> anyhow::Result<Vec<(u64, RequestRecord)>> {
    let mut found: HashMap<u64, RequestRecord> = HashMap::new();
    let bucket_keys = con.scan_keys(&keys.requests_pattern()).await?;
    for chunk in bucket_keys.chunks(REQUEST_BUCKETS_PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.hgetall(key);
        }
        let buckets: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(con).await?;
        for (field, value) in buckets.into_iter().flatten() {
            if let (Some(request), Some(record)) =
                (parse_request_field(&field), RequestRecord::decode(&value))
            {
                let kept = found.entry(request).or_insert(record);
                if record.at_ms > kept.at_ms {
                    *kept = record;
                }
            }
        }
    }
    Ok(found.into_iter().collect())
}
