//! The small enums that travel as `snake_case` strings: a SKU's sale state,
//! a connection's role, a stock event, a hold's state.

use serde::{Deserialize, Serialize};

/// A SKU's sale window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// Buyers may reserve.
    Open,
    /// Opens at `opens_at_ms`.
    Scheduled,
    /// Held by the host; may reopen.
    Paused,
    /// Over.
    Closed,
}

impl std::str::FromStr for SaleState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Self::Open),
            "scheduled" => Ok(Self::Scheduled),
            "paused" => Ok(Self::Paused),
            "closed" => Ok(Self::Closed),
            other => Err(format!(
                "sale state {other:?} is not open, scheduled, paused or closed"
            )),
        }
    }
}

impl SaleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Scheduled => "scheduled",
            Self::Paused => "paused",
            Self::Closed => "closed",
        }
    }
}

/// What a connection may do. Ranked viewer < buyer < checkout < admin:
/// each role can do what the ones below it can, except that a buyer acts
/// only for itself (see `docs/PROTOCOL.md`).
///
/// `Buyer` is declared last so the postcard indices of the older variants
/// (the binary protocol's tags) stay as they were; the ranking is written
/// by hand in [`Role::rank`] instead of coming from the declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Anyone: read counts, subscribe.
    Viewer,
    /// The shop's checkout backend: reserve, commit, release, extend.
    Checkout,
    /// The host: catalog changes.
    Admin,
    /// A buyer with a signed token from the shop: reserve for itself,
    /// release, extend and read its own holds; never commit.
    Buyer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Checkout => "checkout",
            Self::Admin => "admin",
            Self::Buyer => "buyer",
        }
    }

    /// Position in the ranking (not the wire index).
    pub const fn rank(self) -> u8 {
        match self {
            Self::Viewer => 0,
            Self::Buyer => 1,
            Self::Checkout => 2,
            Self::Admin => 3,
        }
    }
}

impl PartialOrd for Role {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Role {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// A stock transition pushed to subscribers and written to the order
/// stream. A SKU is sold out when nothing is available and nothing is held
/// (no unit in a cart could come back); it is back in stock when units are
/// available again after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockEventKind {
    SoldOut,
    BackInStock,
}

impl StockEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoldOut => "sold_out",
            Self::BackInStock => "back_in_stock",
        }
    }
}

/// A hold's state, as `GET /api/holds/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Committed,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_their_serde_form() {
        for s in [
            SaleState::Open,
            SaleState::Scheduled,
            SaleState::Paused,
            SaleState::Closed,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for r in [Role::Viewer, Role::Checkout, Role::Admin, Role::Buyer] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert!(Role::Viewer < Role::Buyer && Role::Buyer < Role::Checkout);
        assert!(Role::Checkout < Role::Admin);
        for e in [StockEventKind::SoldOut, StockEventKind::BackInStock] {
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
        for h in [
            HoldStatus::Held,
            HoldStatus::Committed,
            HoldStatus::Released,
            HoldStatus::Expired,
        ] {
            assert_eq!(
                serde_json::to_string(&h).unwrap(),
                format!("\"{}\"", h.as_str())
            );
        }
    }

    /// The binary protocol's tags of the roles: `Buyer` came later and was
    /// added last, so older clients decode the older roles unchanged.
    #[test]
    fn role_postcard_indices_are_pinned() {
        for (role, index) in [
            (Role::Viewer, 0u8),
            (Role::Checkout, 1),
            (Role::Admin, 2),
            (Role::Buyer, 3),
        ] {
            assert_eq!(postcard::to_stdvec(&role).unwrap(), vec![index], "{role:?}");
        }
    }
}
