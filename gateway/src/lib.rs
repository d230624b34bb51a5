//! The holdfast gateway: puts the engine on the network. One port serves
//! the HTTP API, the websocket fan-out, `/metrics`, `/healthz`, `/readyz`
//! and the pages; the journal persists to Redis.
//!
//! # Layout
//!
//! - [`config`]: the `holdfast` command line (every flag has a `HOLDFAST_*` env var).
//! - [`server`]: `run(listener, args, shutdown)`: wiring, accept loop, drain.
//! - [`protocol`]: the wire types, re-exported from the `holdfast-protocol` crate.
//! - [`ops`]: the operations behind HTTP and websocket (one implementation).
//! - [`http`]: routes, auth and JSON errors; [`http::assets`]: embedded pages.
//! - [`ws`]: the websocket upgrade, [`ws::session`] per connection, [`ws::hub`] fan-out.
//! - [`journal`]: persistence (memory, or Redis with group commit).
//! - [`catalog`]: display data, shows, catalog files, the demo show.
//! - [`auth`], [`ids`], [`error`], [`metrics`]: roles and tokens, keyed ids,
//!   the error type, metric names.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod journal;
pub mod metrics;
pub mod ops;
pub mod protocol;
pub mod server;
pub mod ws;
