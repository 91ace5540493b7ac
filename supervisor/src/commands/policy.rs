//! The policy a command runs under (the file, or the defaults, then the flags that
//! override single keys), and `megavisor policy show`.

use std::process::ExitCode;

use megavisor_core::policy::{CgroupChoice, Size};
use megavisor_core::{Policy, Result};

use crate::args::{PolicyArgs, PolicyCommand, ServePolicyArgs};
use crate::render::outln;

/// The policy of `--policy FILE` (or every default), with the flags applied over it.
pub fn load(args: &PolicyArgs, serve: Option<&ServePolicyArgs>) -> Result<Policy> {
    let mut policy = match &args.policy {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default(),
    };
    apply(&mut policy, args);
    if let Some(serve) = serve {
        apply_serve(&mut policy, serve);
    }
    Ok(policy)
}

/// The flags of native tools, their sandbox and cgroups: lists add to the policy's,
/// single values replace them.
fn apply(policy: &mut Policy, args: &PolicyArgs) {
    let native = &mut policy.native;
    native.binaries.extend(args.binaries.iter().cloned());
    native.digests.extend(args.digests.iter().cloned());
    native.env.extend(args.native_env.iter().cloned());
    if let Some(file) = &args.allowlist {
        native.allowlist_file = Some(file.clone());
    }
    let sandbox = &mut policy.sandbox;
    sandbox.enabled |= args.sandbox;
    sandbox.exec_gate |= args.exec_gate;
    sandbox.network |= args.network;
    replace(&mut sandbox.root, &args.sandbox_root);
    replace(&mut sandbox.workspace, &args.workspace);
    replace(&mut sandbox.jailer, &args.jailer);
    let cgroups = &mut policy.cgroups;
    replace(&mut cgroups.cpus, &args.cpus);
    replace(&mut cgroups.pids, &args.pids);
    replace(&mut cgroups.io_weight, &args.io_weight);
    replace(&mut cgroups.memory, &args.native_memory.map(Size));
    if let Some(version) = &args.cgroup {
        cgroups.version = match version.as_str() {
            "v1" => CgroupChoice::V1,
            "v2" => CgroupChoice::V2,
            "none" => CgroupChoice::None,
            _ => CgroupChoice::Auto,
        };
    }
}

fn apply_serve(policy: &mut Policy, args: &ServePolicyArgs) {
    if let Some(max) = args.max_concurrency {
        policy.limits.max_concurrency = max;
    }
    let peers = &mut policy.peers;
    peers.allow_uids.extend(&args.allow_uids);
    peers.allow_gids.extend(&args.allow_gids);
    peers.mount_roots.extend(args.mount_roots.iter().cloned());
    if let Some(group) = &args.socket_group {
        peers.socket_group = Some(group.clone());
    }
}

/// `slot` becomes the flag's value, when the flag was given.
fn replace<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        slot.clone_from(flag);
    }
}

/// `megavisor policy ...`.
pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    let PolicyCommand::Show(args) = command;
    let mut policy = load(&args.policy, Some(&args.serve))?;
    // The jailer a sandbox would use, rather than "the default".
    policy.sandbox.jailer = Some(policy.jailer());
    if args.json {
        let json = serde_json::to_string_pretty(&policy).expect("a policy serializes");
        outln!("{json}");
    } else {
        outln!("{}", policy.to_toml().trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
