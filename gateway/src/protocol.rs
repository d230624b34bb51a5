//! The wire types live in their own crate, `holdfast-protocol`, so a native
//! client or the load tester never compiles the server. Re-exported here
//! for the gateway's modules.

pub use holdfast_protocol::*;
