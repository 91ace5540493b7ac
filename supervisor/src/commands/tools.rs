//! `megavisor tools`: the bundle's entries.

use std::process::ExitCode;

use megavisor_core::Result;

use super::open_runtime;
use crate::args::ToolsArgs;
use crate::render::outln;

pub fn run(args: ToolsArgs) -> Result<ExitCode> {
    let runtime = open_runtime(&args.bundle)?;
    if args.json {
        let entries = serde_json::to_string_pretty(runtime.entries()).expect("entries serialize");
        outln!("{entries}");
        return Ok(ExitCode::SUCCESS);
    }
    let width = runtime
        .entries()
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0);
    for entry in runtime.entries() {
        outln!("{:width$}  {}", entry.name, entry.description);
    }
    Ok(ExitCode::SUCCESS)
}
