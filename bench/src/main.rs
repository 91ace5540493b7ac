//! megavisor benchmarks. Prints one JSON object per case on stdout:
//! `{"case", "p50_us", "p99_us", "ops_per_s", "iterations", "peer", "speedup_vs_peer"}`.
//! Every case is measured in the same run as its peer (fork/exec of `/bin/true`), because
//! the machines are noisy and only ratios within one run mean anything.

mod client;
mod code;
mod grpc;
mod samples;
mod soak;
mod supervisor;

use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, Subcommand};
use megavisor_core::native::{AllowlistConfig, NativeOptions, SandboxOptions};
use megavisor_core::{EngineOptions, Request, Runtime, RuntimeOptions, ToolRef, TrustPolicy};
use serde_json::json;

use samples::{Samples, median_us, report};
use supervisor::{Supervisor, measure_clients};

/// Benchmark arguments.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Bundle directory to measure.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Trusted public key of the bundle.
    #[arg(long = "trusted-key")]
    trusted_key: Option<PathBuf>,
    /// The megavisor binary for the supervisor cases (default: next to this one).
    #[arg(long)]
    megavisor: Option<PathBuf>,
    /// A benchmark program of another language (repeatable; bench/run passes the C, Python
    /// and Node ones), run as `PROGRAM SOCKET ITERATIONS SPAWNS` against the same supervisor,
    /// with `MEGAVISOR_BUNDLE` and `MEGAVISOR_TRUSTED_KEY` set. It prints its own JSON lines
    /// and measures its own peers in the same run.
    #[arg(long = "program")]
    programs: Vec<PathBuf>,
    /// Fewer iterations, for CI smoke runs.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand)]
enum Mode {
    /// One client process of a supervisor case (started by the suite, or by tests with
    /// --check as a correctness load).
    Client(client::ClientArgs),
    /// One Rust client process of the soak (`bench/soak`).
    SoakClient(soak::SoakArgs),
}

struct Sizes {
    warmup: usize,
    iterations: usize,
    spawns: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::Client(client_args)) => return client::run(client_args),
        Some(Mode::SoakClient(soak_args)) => return soak::run(soak_args),
        None => {}
    }
    let (Some(bundle), Some(key)) = (args.bundle, args.trusted_key) else {
        return Err("pass --bundle and --trusted-key (bench/run does)".into());
    };
    let sizes = if args.quick {
        Sizes {
            warmup: 200,
            iterations: 2_000,
            spawns: 300,
        }
    } else {
        Sizes {
            warmup: 2_000,
            iterations: 20_000,
            spawns: 2_000,
        }
    };

    let spawn_true = || {
        let status = Command::new("/bin/true").status().expect("spawn /bin/true");
        assert!(status.success());
    };
    let (spawn, spawn_wall) = Samples::collect(sizes.spawns, spawn_true);
    let peer = report("spawn/bin-true", &spawn, spawn_wall, None);
    println!("{peer}");
    let peer = ("spawn/bin-true", peer["p50_us"].as_f64().expect("a number"));

    embedded_cases(&bundle, &key, &sizes, peer)?;
    native_cases(&bundle, &key, &sizes, peer)?;

    let megavisor = match args.megavisor {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("megavisor"),
    };
    // As many guest threads as this machine has cores, like the supervisor's default.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let supervisor = Supervisor::start(&megavisor, &bundle, &key, cores)?;
    for (case, transport, clients) in [
        ("ring/true", "ring", 1),
        ("ring/true/2-clients", "ring", 2),
        ("ring/true/4-clients", "ring", 4),
        ("socket/true", "socket", 1),
    ] {
        let (samples, wall) = measure_clients(
            supervisor.socket(),
            transport,
            clients,
            sizes.warmup,
            sizes.iterations / clients,
        )?;
        let mut line = report(case, &samples, wall, Some(peer));
        line["clients"] = json!(clients);
        println!("{line}");
    }
    let (samples, wall) = grpc::measure(supervisor.grpc_socket(), sizes.warmup, sizes.iterations)?;
    println!("{}", report("grpc/true", &samples, wall, Some(peer)));
    code::run(&open_runtime(&bundle, &key)?, supervisor.socket(), &sizes)?;
    for program in &args.programs {
        let status = Command::new(program)
            .arg(supervisor.socket())
            .arg(sizes.iterations.to_string())
            .arg(sizes.spawns.to_string())
            .env("MEGAVISOR_BUNDLE", &bundle)
            .env("MEGAVISOR_TRUSTED_KEY", &key)
            .status()?;
        if !status.success() {
            return Err(format!("{} failed: {status}", program.display()).into());
        }
    }
    Ok(())
}

/// The bundle loaded in this process, as the embedded cases use it.
fn open_runtime(
    bundle: &std::path::Path,
    key: &std::path::Path,
) -> Result<Runtime, Box<dyn std::error::Error>> {
    let policy = TrustPolicy::from_key_files(&[key.to_owned()])?;
    let options = RuntimeOptions {
        engine: EngineOptions {
            max_concurrency: 4,
            ..EngineOptions::default()
        },
        ..RuntimeOptions::default()
    };
    Ok(Runtime::open(bundle, &policy, options)?)
}

/// The engine in this process, no supervisor: the floor the supervisor cases build on.
fn embedded_cases(
    bundle: &std::path::Path,
    key: &std::path::Path,
    sizes: &Sizes,
    peer: (&str, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = open_runtime(bundle, key)?;
    for (case, request) in [
        ("embedded/true", Request::new("true")),
        (
            "embedded/echo",
            Request::new("echo").args(["hello", "world"]),
        ),
    ] {
        let mut timings = Vec::with_capacity(sizes.warmup + sizes.iterations);
        let mut call = || {
            let out = runtime.run(&request).expect("invocation succeeds");
            assert_eq!(out.exit_code, 0);
            timings.push(out.timings);
        };
        Samples::collect(sizes.warmup, &mut call);
        let (samples, wall) = Samples::collect(sizes.iterations, &mut call);
        let timings = &timings[sizes.warmup..];
        let mut line = report(case, &samples, wall, Some(peer));
        // Where the time goes inside the call, as the runtime itself measures it.
        line["instantiate_p50_us"] = json!(median_us(
            timings.iter().map(|t| t.instantiate_us).collect()
        ));
        line["run_p50_us"] = json!(median_us(timings.iter().map(|t| t.run_us).collect()));
        println!("{line}");
    }
    Ok(())
}

/// `/bin/true` as a native tool, against the same fork/exec: allowlisted and run as a plain
/// process (`native/direct/true`), and through the whole sandbox: jailer, namespaces,
/// pivot_root, cgroup, seccomp (`native/sandboxed/true`; needs root, else reported skipped);
/// then behind the exec gate too (`gate/sandboxed/true`, against `native/sandboxed/true`).
fn native_cases(
    bundle: &std::path::Path,
    key: &std::path::Path,
    sizes: &Sizes,
    peer: (&str, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    let policy = TrustPolicy::from_key_files(&[key.to_owned()])?;
    let allowlist = AllowlistConfig {
        paths: vec!["/bin/true".into()],
        // The gate grants what the digests allow: /bin/true itself.
        digests: vec![
            megavisor_core::Digests::of_file(std::path::Path::new("/bin/true"))?
                .0
                .sha256,
        ],
        ..AllowlistConfig::default()
    };
    let mut cases = vec![("native/direct/true", None, true)];
    if nix::unistd::geteuid().is_root() {
        let gated = SandboxOptions {
            exec_gate: true,
            ..SandboxOptions::default()
        };
        cases.push((
            "native/sandboxed/true",
            Some(SandboxOptions::default()),
            true,
        ));
        cases.push(("gate/sandboxed/true", Some(gated), false));
    } else {
        for case in ["native/sandboxed/true", "gate/sandboxed/true"] {
            println!(
                "{}",
                json!({"case": case, "skipped": "the sandbox needs root"})
            );
        }
    }
    let mut sandboxed_p50 = None;
    for (case, sandbox, against_spawn) in cases {
        let options = RuntimeOptions {
            native: Some(NativeOptions {
                allowlist: allowlist.clone(),
                sandbox,
                ..NativeOptions::default()
            }),
            ..RuntimeOptions::default()
        };
        let runtime = Runtime::open(bundle, &policy, options)?;
        let mut request = Request::new("true");
        request.tool = ToolRef::Native("/bin/true".into());
        let call = || {
            let out = runtime.run(&request).expect("native call succeeds");
            assert_eq!(out.exit_code, 0);
        };
        Samples::collect(sizes.spawns / 10, call);
        let (samples, wall) = Samples::collect(sizes.spawns, call);
        let against = match (against_spawn, sandboxed_p50) {
            (false, Some(p50)) => ("native/sandboxed/true", p50),
            _ => peer,
        };
        let line = report(case, &samples, wall, Some(against));
        if case == "native/sandboxed/true" {
            sandboxed_p50 = line["p50_us"].as_f64();
        }
        println!("{line}");
    }
    Ok(())
}
