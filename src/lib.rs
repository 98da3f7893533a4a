//! kbuild: recipes → content-addressed store → generations → atomic switch.
//!
//! The library owns every operation and never prints; `src/cli` and `src/main.rs` are the
//! only code that talks to the terminal.

pub mod activate;
pub mod build;
pub mod check;
pub mod derivation;
pub mod diff;
pub mod envfile;
pub mod fetch;
pub mod fs;
pub mod gc;
pub mod generation;
pub mod health;
pub mod hosts;
pub mod inputs;
pub mod install;
pub mod interrupt;
pub mod lockfile;
pub mod observe;
pub mod pin;
pub mod recipe;
pub mod registry;
pub mod render;
pub mod store;
pub mod unit_name;
pub mod unpack;
