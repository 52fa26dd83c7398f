//! Spawning server labs (in progress).
