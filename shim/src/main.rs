//! `containerd-shim-megavisor-v1`: containerd's runtime `io.containerd.megavisor.v1`.
//!
//! containerd starts it for a container (or a pod) whose runtime is megavisor's. Each
//! container's process is looked up in the image map that `megavisor recompile` put in its
//! image, by the content of the file `args[0]` resolves to inside the image, and runs as
//! the bundle entry the map names, through the node's supervisor or a bundle loaded here.
//! Anything the map does not list, or whose content changed, ends at once with exit status
//! 126 and `EACCES: ...` on its stderr.

mod config;
mod container;
mod runner;
mod service;
mod task;

fn main() {
    containerd_shim::run::<service::Service>(
        megavisor_image::write::RUNTIME,
        Some(service::config()),
    );
}
