//! Latency samples and the JSON line each case prints.

use std::time::{Duration, Instant};

use serde_json::json;

/// Latency samples of one case, sorted.
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Runs `op` `iterations` times, timing each; returns the samples and the wall time.
    pub fn collect(iterations: usize, mut op: impl FnMut()) -> (Self, Duration) {
        let mut samples = Vec::with_capacity(iterations);
        let started = Instant::now();
        for _ in 0..iterations {
            let t = Instant::now();
            op();
            samples.push(t.elapsed());
        }
        let wall = started.elapsed();
        (Samples::from_unsorted(samples), wall)
    }

    /// Samples gathered elsewhere (e.g. by client processes).
    pub fn from_unsorted(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Samples(samples)
    }

    fn percentile_us(&self, p: f64) -> f64 {
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_nanos() as f64 / 1e3
    }
}

/// The JSON line of a case: percentiles, throughput over `wall`, and the speed-up over the
/// peer measured in the same run.
pub fn report(
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
pub fn median_us(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
