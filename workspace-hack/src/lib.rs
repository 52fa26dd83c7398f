//! Feature unification for the course workspace; see this crate's `Cargo.toml`.
//!
//! This crate has no code. It exists so that every lab compiles against the
//! same versions and features of every shared dependency.
