//! megavisor benchmarks. Prints one JSON object per case on stdout:
//! `{"case", "p50_us", "p99_us", "ops_per_s", "iterations", "peer", "speedup_vs_peer"}`.
//! Every case is measured in the same run as its peer (fork/exec of `/bin/true`), because
//! the machines are noisy and only ratios within one run mean anything.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use megavisor_core::{EngineOptions, Request, Runtime, RuntimeOptions, TrustPolicy};
use serde_json::json;

/// Benchmark arguments.
#[derive(Parser)]
struct Args {
    /// Bundle directory to measure.
    #[arg(long)]
    bundle: PathBuf,
    /// Trusted public key of the bundle.
    #[arg(long = "trusted-key")]
    trusted_key: PathBuf,
    /// Fewer iterations, for CI smoke runs.
    #[arg(long)]
    quick: bool,
}

/// Latency samples of one case.
struct Samples(Vec<Duration>);

impl Samples {
    fn collect(iterations: usize, mut op: impl FnMut()) -> (Self, Duration) {
        let mut samples = Vec::with_capacity(iterations);
        let started = Instant::now();
        for _ in 0..iterations {
            let t = Instant::now();
            op();
            samples.push(t.elapsed());
        }
        let wall = started.elapsed();
        samples.sort();
        (Samples(samples), wall)
    }

    fn percentile_us(&self, p: f64) -> f64 {
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_nanos() as f64 / 1e3
    }
}

fn report(
    case: &str,
    samples: &Samples,
    wall: Duration,
    peer: Option<(&str, f64)>,
) -> serde_json::Value {
    let p50 = samples.percentile_us(0.50);
    let mut line = json!({
        "case": case,
        "p50_us": round2(p50),
        "p99_us": round2(samples.percentile_us(0.99)),
        "ops_per_s": round2(samples.0.len() as f64 / wall.as_secs_f64()),
        "iterations": samples.0.len(),
    });
    if let Some((peer_case, peer_p50)) = peer {
        line["peer"] = json!(peer_case);
        line["speedup_vs_peer"] = json!(round2(peer_p50 / p50));
    }
    line
}

/// Median of one timing component over many results, in microseconds.
fn median_us(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (warmup, iterations, spawns) = if args.quick {
        (200, 2_000, 300)
    } else {
        (2_000, 20_000, 2_000)
    };
    let policy = TrustPolicy::from_key_files(&[args.trusted_key])?;
    let options = RuntimeOptions {
        engine: EngineOptions {
            max_concurrency: 4,
            ..EngineOptions::default()
        },
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::open(&args.bundle, &policy, options)?;

    let spawn_true = || {
        let status = Command::new("/bin/true").status().expect("spawn /bin/true");
        assert!(status.success());
    };
    let (spawn, spawn_wall) = Samples::collect(spawns, spawn_true);
    let peer = report("spawn/bin-true", &spawn, spawn_wall, None);
    println!("{peer}");
    let peer_p50 = peer["p50_us"].as_f64().expect("a number");

    for (case, request) in [
        ("embedded/true", Request::new("true")),
        (
            "embedded/echo",
            Request::new("echo").args(["hello", "world"]),
        ),
    ] {
        let mut timings = Vec::with_capacity(warmup + iterations);
        let mut call = || {
            let out = runtime.run(&request).expect("invocation succeeds");
            assert_eq!(out.exit_code, 0);
            timings.push(out.timings);
        };
        Samples::collect(warmup, &mut call);
        let (samples, wall) = Samples::collect(iterations, &mut call);
        let timings = &timings[warmup..];
        let mut line = report(case, &samples, wall, Some(("spawn/bin-true", peer_p50)));
        // Where the time goes inside the call, as the runtime itself measures it.
        line["instantiate_p50_us"] = json!(median_us(
            timings.iter().map(|t| t.instantiate_us).collect()
        ));
        line["run_p50_us"] = json!(median_us(timings.iter().map(|t| t.run_us).collect()));
        println!("{line}");
    }
    Ok(())
}
