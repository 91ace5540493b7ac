//! `megavisor`: run tools from a verified megabinary bundle, inspect and build bundles, and
//! serve them (the program's code; `main.rs` only calls [`main`]).

mod args;
mod commands;
mod render;
mod serve;

#[cfg(fuzzing)]
pub mod fuzzing;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

/// The `megavisor` program.
pub fn main() -> ExitCode {
    // Nothing this process inherited reaches what it starts (native tools, the jailer):
    // every descriptor above stderr is closed at their exec.
    // SAFETY: close_range only changes descriptor flags.
    unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level)),
        )
        .init();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Tools(args) => commands::tools::run(args),
        Command::Exec(args) => commands::exec::run(args),
        Command::Recompile(args) => commands::recompile::run(args),
        Command::RunImage(args) => commands::run_image::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Pack(args) => commands::pack::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Policy(command) => commands::policy::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let failure = render::Reported::from(err);
            render::print_error(&failure);
            render::exit_code_for(failure.kind())
        }
    }
}
