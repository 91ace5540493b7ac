//! Exists so that `[build-dependencies]` (whose features pin those of every build script and
//! proc macro in the workspace) are part of the graph; it builds nothing.
fn main() {}
