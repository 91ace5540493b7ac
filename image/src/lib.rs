//! Container images on the megabinary.
//!
//! An operator takes a container image and recompiles it: its layers are applied to a root
//! ([`unpack`]), every executable in it is hashed ([`root`]) and mapped by content to a
//! bundle entry, to the native sandbox, or to nothing ([`recompile`]), and the result is a
//! signed [`map::ImageMap`] carried in one more layer of a new image ([`write`]). When the
//! image runs, a path is executed only if the map lists it and its content is still what
//! the map records; anything else fails with EACCES.
//!
//! Images are read from an OCI image layout or a tarball ([`source`], [`layout`]); nothing
//! is pulled from a registry.

pub mod layout;
pub mod map;
pub mod recompile;
pub mod root;
pub mod source;
pub mod unpack;
pub mod write;

pub use map::{Disposition, ImageMap};
pub use recompile::{Job, OperatorMap, Outcome, Progress, recompile};
pub use root::{MappedRoot, Resolved, Root};
pub use unpack::UnpackLimits;
