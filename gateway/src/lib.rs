//! The holdfast gateway: puts the engine on the network. One port serves
//! the HTTP API, the websocket fan-out, `/metrics`, `/healthz`, `/readyz`
//! and the pages; the journal persists to Redis.
//!
//! # Layout
//!
//! - [`config`]: the `holdfast` command line (every flag has a `HOLDFAST_*` env var).
//! - [`server`]: `run(listener, args, shutdown)`: wiring, start-up, drain.
//! - [`accept`]: the accept loop; per-address and silence limits of HTTP connections.
//! - [`protocol`]: the wire types, re-exported from the `holdfast-protocol` crate.
//! - [`ops`]: the operations behind HTTP and websocket (one implementation).
//! - [`http`]: routes, auth and JSON errors; [`http::assets`]: embedded pages;
//!   [`http::health`]: `/healthz`, `/readyz`, `/metrics`; [`http::cors`]: the CORS allow-list.
//! - [`ws`]: the websocket upgrade, [`ws::session`] per connection, [`ws::hub`] fan-out.
//! - [`journal`]: persistence (memory, or Redis with group commit).
//! - [`catalog`]: display data, shows, catalog files, the demo show.
//! - [`channels`]: sales channels of a SKU at the wire (definitions, counts,
//!   a token's channel claim); [`http::channels`]: the quota move route.
//! - [`privacy`]: buyer-id pseudonyms (HMAC-SHA256); [`http::privacy`]: buyer
//!   erasure; [`journal::erase`]: its Redis side; [`cluster::erase`]: on every node.
//! - [`stats`]: server-side show statistics (flows, revenue, sales over time).
//! - [`webhooks`]: signed webhooks to the shop (endpoints, queues, delivery).
//! - [`auth`], [`ids`], [`error`], [`metrics`]: roles and tokens, keyed
//!   ids, the error type, metric names (the few system calls are the
//!   workspace's `holdfast-sys` crate).

pub mod accept;
pub mod auth;
pub mod catalog;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod journal;
pub mod metrics;
pub mod ops;
pub mod privacy;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod webhooks;
pub mod ws;

// The wire format's bounds are the engine's: one number, two crates.
const _: () = assert!(
    protocol::limits::CART_LINES_MAX == holdfast_engine::limits::CART_LINES_MAX
        && protocol::limits::SKU_UNITS_MAX == holdfast_engine::limits::SKU_UNITS_MAX
);
