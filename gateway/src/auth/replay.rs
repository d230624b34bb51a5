//! Replay limits of buyer tokens: how many reservations, and how many units
//! in all, one token (`sub`, `jti`) has made. A token leaked from a page
//! can then hold at most what the shop meant it to.
//!
//! The table is bounded (`--buyer-token-entries-max`, allocated lazily);
//! an entry is forgotten once its token has expired (past the leeway: the
//! token can no longer be used, so its count no longer matters). A full
//! table of live tokens refuses new tokens with 503 `capacity` rather than
//! forget a live count. A retried reservation (same request id) is not
//! counted again.
//!
//! One mutex guards the table: it is taken once per buyer-token
//! reservation (people tapping "buy", not the checkout backend's burst),
//! for a hash lookup and at most a few heap pops.

use super::jwt::{BuyerToken, LEEWAY_MS, refuse};
use crate::error::ApiError;
use crate::protocol::Code;
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// Default `--buyer-token-entries-max`: live tokens counted at once.
pub const ENTRIES_MAX_DEFAULT: usize = 100_000;

type TokenKey = [u8; 32];

#[derive(Debug)]
struct Entry {
    forget_at_ms: u64,
    reservations: u32,
    units: u32,
    /// Request ids already counted (at most `reservations_max`).
    requests: Vec<u64>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<TokenKey, Entry>,
    /// When each entry may be forgotten, earliest first.
    forget: BinaryHeap<Reverse<(u64, TokenKey)>>,
}

/// A counted reservation, to give back if the reservation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    key: TokenKey,
    units: u32,
    request: Option<u64>,
    /// Whether anything was counted (a retry is not).
    counted: bool,
}

#[derive(Debug)]
pub struct ReplayTable {
    table: Mutex<Table>,
    entries_max: usize,
    reservations_max: u32,
}

fn token_key(t: &BuyerToken) -> TokenKey {
    let mut h = Sha256::new();
    h.update(t.sub.as_bytes());
    h.update([0]);
    h.update(t.jti.as_bytes());
    h.finalize().into()
}

impl ReplayTable {
    pub fn new(entries_max: usize, reservations_max: u32) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            entries_max,
            reservations_max,
        }
    }

    /// Counts a reservation of `units` by `token` (with the scoped request
    /// id's hash, if any), or refuses it: `token_replayed` past the most
    /// reservations, `token_limit_exceeded` past `max_units`, `capacity`
    /// when the table is full of live tokens.
    pub fn admit(
        &self,
        token: &BuyerToken,
        units: u32,
        request: Option<u64>,
        now_ms: u64,
    ) -> Result<Ticket, ApiError> {
        let key = token_key(token);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.forget_expired(now_ms);
        if !t.entries.contains_key(&key) {
            if t.entries.len() >= self.entries_max {
                return Err(ApiError::capacity(
                    "too many live buyer tokens are counted; retry shortly",
                ));
            }
            let forget_at_ms = token.exp_ms.saturating_add(LEEWAY_MS);
            t.entries.insert(
                key,
                Entry {
                    forget_at_ms,
                    reservations: 0,
                    units: 0,
                    requests: Vec::new(),
                },
            );
            t.forget.push(Reverse((forget_at_ms, key)));
        }
        let entry = t.entries.get_mut(&key).expect("inserted above");
        if request.is_some_and(|r| entry.requests.contains(&r)) {
            return Ok(Ticket {
                key,
                units,
                request,
                counted: false,
            });
        }
        if entry.reservations >= self.reservations_max {
            return Err(refuse(
                Code::TokenReplayed,
                format!(
                    "this token was used for {} reservations already",
                    self.reservations_max
                ),
            ));
        }
        if let Some(max) = token.max_units
            && entry.units.saturating_add(units) > max
        {
            return Err(refuse(
                Code::TokenLimitExceeded,
                format!("this token allows {max} units in all"),
            ));
        }
        entry.reservations += 1;
        entry.units = entry.units.saturating_add(units);
        if let Some(r) = request {
            entry.requests.push(r);
        }
        Ok(Ticket {
            key,
            units,
            request,
            counted: true,
        })
    }

    /// Gives back a counted reservation that was then refused.
    pub fn cancel(&self, ticket: Ticket) {
        if !ticket.counted {
            return;
        }
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.entries.get_mut(&ticket.key) {
            e.reservations = e.reservations.saturating_sub(1);
            e.units = e.units.saturating_sub(ticket.units);
            if let Some(r) = ticket.request {
                e.requests.retain(|x| *x != r);
            }
        }
    }

    /// Tokens counted now.
    pub fn len(&self) -> usize {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    fn forget_expired(&mut self, now_ms: u64) {
        while let Some(Reverse((at, key))) = self.forget.peek().copied() {
            if at >= now_ms {
                break;
            }
            self.forget.pop();
            // Only the entry this heap item was pushed for (a key comes
            // back with another `exp` only if the shop reused a jti).
            if self.entries.get(&key).is_some_and(|e| e.forget_at_ms == at) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(jti: &str, exp_ms: u64, max_units: Option<u32>) -> BuyerToken {
        BuyerToken {
            sub: "b".into(),
            jti: jti.into(),
            exp_ms,
            channel: None,
            max_units,
            skus: None,
            show: None,
        }
    }

    #[test]
    fn counts_limits_retries_expiry_and_capacity() {
        let table = ReplayTable::new(2, 2);
        let a = tok("a", 10_000, Some(3));
        table.admit(&a, 1, Some(1), 0).unwrap();
        assert!(!table.admit(&a, 1, Some(1), 0).unwrap().counted, "a retry");
        assert_eq!(
            table.admit(&a, 3, Some(2), 0).unwrap_err().code,
            Code::TokenLimitExceeded
        );
        let t = table.admit(&a, 2, Some(2), 0).unwrap();
        assert_eq!(
            table.admit(&a, 0, Some(3), 0).unwrap_err().code,
            Code::TokenReplayed,
            "at the bound of 2 reservations"
        );
        table.cancel(t);
        table.admit(&a, 1, None, 0).unwrap();
        table.admit(&tok("b", 20_000, None), 1, None, 0).unwrap();
        assert_eq!(
            table
                .admit(&tok("c", 20_000, None), 1, None, 0)
                .unwrap_err()
                .code,
            Code::Capacity,
            "full of live tokens"
        );
        // Past a's exp and the leeway, its entry is forgotten.
        table
            .admit(&tok("c", 20_000, None), 1, None, 10_000 + LEEWAY_MS + 1)
            .unwrap();
        assert_eq!(table.len(), 2);
    }
}
