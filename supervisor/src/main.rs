//! `megavisor`: run tools from a verified megabinary bundle, inspect and build bundles.

fn main() -> std::process::ExitCode {
    megavisor::main()
}
