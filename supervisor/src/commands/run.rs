//! `megavisor run`: one tool invocation on the bundle, or on an ad-hoc module.

use std::path::Path;
use std::process::ExitCode;

use megavisor_client::{Call, Client};
use megavisor_core::bundle::VerifiedBundle;
use megavisor_core::{
    Access, Capability, Digests, Error, Mount, Request, Result, Runtime, ToolRef,
};
use megavisor_driver::convert;

use super::{build_request, bundle_dir, open_runtime, runtime_options, trust_policy};
use crate::args::RunArgs;
use crate::render;

pub fn run(args: RunArgs) -> Result<ExitCode> {
    if let Some(module) = &args.module {
        return run_module(module, &args);
    }
    let Some((tool, mut tool_args)) = args.command.split_first() else {
        return Err(Error::BadRequest(
            "name a tool to run (see `megavisor tools`)".to_owned(),
        ));
    };
    let mut params = args.invoke.params.clone();
    // `run TOOL --params JSON`: the trailing arguments swallow a flag after TOOL.
    if let [flag, json] = tool_args
        && flag == "--params"
        && params.is_none()
    {
        params = Some(json.clone());
        tool_args = &[];
    }
    if params.is_some() && !tool_args.is_empty() {
        return Err(Error::BadRequest(
            "pass either ARGS or --params, not both".to_owned(),
        ));
    }
    let mut request = build_request(tool, tool_args, &args.invoke)?;
    if args.native {
        request.tool = ToolRef::Native(tool.into());
    }
    if let Some(socket) = &args.socket {
        return Ok(run_remote(socket, request, params, args.invoke.json));
    }
    let runtime = open_runtime(&args.bundle)?;
    if let Some(json) = &params {
        render_params(&runtime, &mut request, json)?;
    }
    Ok(render::report(runtime.run(&request), args.invoke.json))
}

/// Renders JSON `params` into the request's argv and stdin through its entry's schema.
fn render_params(runtime: &Runtime, request: &mut Request, json: &str) -> Result<()> {
    let ToolRef::Name(name) = &request.tool else {
        return Err(Error::BadRequest(
            "--params needs a tool of the bundle, not a native binary".to_owned(),
        ));
    };
    let entry = runtime
        .manifest()
        .entry(name)
        .ok_or_else(|| Error::ToolNotFound {
            name: name.clone(),
            available: runtime.manifest().entry_names(),
        })?;
    let params = serde_json::from_str(json)
        .map_err(|e| Error::BadRequest(format!("--params is not JSON: {e}")))?;
    let rendered = entry.render_arguments(&params)?;
    request.args = rendered.args;
    if let Some(stdin) = rendered.stdin {
        request.stdin = stdin;
    }
    Ok(())
}

/// Runs the request on the supervisor listening at `socket`, over the shared-memory ring;
/// the supervisor renders `params` through the tool's schema.
fn run_remote(socket: &Path, request: Request, params: Option<String>, as_json: bool) -> ExitCode {
    let mut call = convert::call(request);
    call.params_json = params.unwrap_or_default();
    let call = Call::from(call);
    let outcome = Client::connect(socket)
        .and_then(|client| client.call(&call))
        .map(convert::output_from_wire);
    render::report(outcome, as_json)
}

/// Runs an ad-hoc module (`Runtime::adhoc`), outside the bundle. It must be one of the
/// bundle's own modules (same digests) unless the operator passed --allow-unsigned; it is granted
/// exactly the mounts and environment on the command line.
fn run_module(path: &Path, args: &RunArgs) -> Result<ExitCode> {
    let wasm = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        action: "read",
        message: e.to_string(),
    })?;
    let digests = Digests::of_bytes(&wasm);
    if !args.bundle.trust.allow_unsigned {
        let bundle = VerifiedBundle::open(
            &bundle_dir(&args.bundle),
            &trust_policy(&args.bundle.trust)?,
        )?;
        if !bundle
            .manifest
            .modules
            .iter()
            .any(|m| m.wasm.digests == digests)
        {
            return Err(Error::NotAllowed(format!(
                "{} (sha256 {}) is not in the manifest; pass --allow-unsigned to run it anyway",
                path.display(),
                digests.sha256
            )));
        }
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module");
    let request = build_request(name, &args.command, &args.invoke)?;
    let runtime = Runtime::adhoc(
        &wasm,
        name,
        granted_by_flags(&request.mounts, &request.env),
        runtime_options(&args.bundle)?,
    )?;
    Ok(render::report(runtime.run(&request), args.invoke.json))
}

fn granted_by_flags(mounts: &[Mount], env: &[(String, String)]) -> Vec<Capability> {
    let fs = mounts.iter().map(|m| match m.access {
        Access::ReadOnly => Capability::FsRead(m.guest.clone()),
        Access::ReadWrite => Capability::FsWrite(m.guest.clone()),
    });
    fs.chain(env.iter().map(|(k, _)| Capability::Env(k.clone())))
        .collect()
}
