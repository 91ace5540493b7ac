//! `megavisor exec PATH [ARGS]`: runs the entry that stands for a native binary, found by
//! its originals. The file at PATH is hashed; the entry whose originals record its digests
//! runs, and anything else is refused with EACCES (`not_allowed`, exit 126).

use std::path::Path;
use std::process::ExitCode;

use megavisor_core::Result;

use super::{build_request, open_runtime};
use crate::args::ExecArgs;
use crate::render;

pub fn run(args: ExecArgs) -> Result<ExitCode> {
    let (path, tool_args) = args.command.split_first().expect("clap requires PATH");
    let runtime = open_runtime(&args.bundle)?;
    let entry = runtime.entry_for_native(Path::new(path))?;
    let request = build_request(&entry.name, tool_args, &args.invoke)?;
    Ok(render::report(runtime.run(&request), args.invoke.json))
}
