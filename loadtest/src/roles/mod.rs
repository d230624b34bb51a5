//! What the simulated people do: [`viewer`] watches, [`buyer`] buys,
//! [`host`] runs the show.
//!
//! Owns behaviour only; transports are [`crate::client`]'s and numbers go
//! to [`crate::stats`].

pub mod buyer;
pub mod host;
pub mod viewer;
