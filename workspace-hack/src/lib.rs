//! No code: see `Cargo.toml`. Depending on this crate pins the features of the dependencies
//! the workspace shares, whichever of its packages is built.
