//! `megavisor`: run tools from a verified megabinary bundle, inspect and build bundles.

mod args;
mod commands;
mod render;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
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
        Command::Verify(args) => commands::verify::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Pack(args) => commands::pack::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let failure = render::Failure::from(err);
            render::print_error(&failure);
            render::exit_code_for(failure.kind())
        }
    }
}
