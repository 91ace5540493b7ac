//! `megavisor-bench soak-client`: one Rust client process of the soak (`bench/soak`). It
//! makes its share of mixed calls, 16 in flight at a time on one connection, each with a
//! payload no other call has, checks every reply against its own request, and prints one
//! JSON line: its counts (ok, lost, duplicated, crossed) and a latency histogram per time
//! window. The Python and Node clients (`bench/python/soak.py`, `bench/node/soak.js`) make
//! the same calls and print the same line; `bench/soak.py` says how each call is built.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use megavisor_client::{Call, Client, ErrorKind};
use serde_json::json;

/// Calls in flight at once on the connection.
const WINDOW: u64 = 16;

/// Arguments of one soak client.
#[derive(Args)]
pub struct SoakArgs {
    /// The supervisor's socket.
    #[arg(long)]
    socket: PathBuf,
    /// This client's number (it is part of every payload).
    #[arg(long)]
    client: u64,
    /// Calls to make.
    #[arg(long)]
    calls: u64,
    /// Length of a latency window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
}

/// What call `seq` of `client` sends, and what it must get back.
struct Planned {
    call: Call,
    expect: Expect,
}

enum Expect {
    Stdout(Vec<u8>),
    Error(ErrorKind),
}

/// Call `seq` of `client`: the same plan as the other languages' clients.
fn plan(client: u64, seq: u64) -> Planned {
    let token = format!("{client}:{seq}|");
    let payload = |len: usize| {
        let bytes = token.as_bytes().iter().copied().cycle();
        bytes.take(len.max(token.len())).collect::<Vec<u8>>()
    };
    match seq % 4 {
        0 => {
            let stdin = payload((seq * 7919 % 8192) as usize);
            Planned {
                call: Call::new("cat").stdin(stdin.clone()),
                expect: Expect::Stdout(stdin),
            }
        }
        1 => {
            let word = format!("{client}-{seq}");
            Planned {
                call: Call::new("echo").args([word.clone()]),
                expect: Expect::Stdout(format!("{word}\n").into_bytes()),
            }
        }
        2 => {
            let stdin = payload((seq * 31 % 5000) as usize);
            let digest = sha256_hex(&stdin);
            Planned {
                call: Call::new("sha256sum").stdin(stdin),
                expect: Expect::Stdout(format!("{digest}  -\n").into_bytes()),
            }
        }
        _ if seq % 100 == 3 => Planned {
            call: Call::new(format!("no-such-tool-{client}-{seq}")),
            expect: Expect::Error(ErrorKind::ToolNotFound),
        },
        _ => {
            let stdin = payload(64);
            Planned {
                call: Call::new("cat").stdin(stdin.clone()),
                expect: Expect::Stdout(stdin),
            }
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    megavisor_core::Digests::of_bytes(bytes).sha256
}

/// Runs one soak client.
pub fn run(args: SoakArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(&args.socket)?;
    let window = Duration::from_millis(args.window_ms);
    let started = Instant::now();
    // A hash of every stdout already answered, to tell a reply given twice (duplicated)
    // from one meant for a call this client never made or has not had answered (crossed).
    let mut answered: HashSet<u64> = HashSet::new();
    let (mut ok, mut lost, mut duplicated, mut crossed) = (0u64, 0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut windows: Vec<BTreeMap<u32, u64>> = Vec::new();
    let mut seq = 0;
    while seq < args.calls {
        let batch: Vec<_> = (seq..(seq + WINDOW).min(args.calls))
            .map(|n| {
                let planned = plan(args.client, n);
                let sent = Instant::now();
                (planned.expect, sent, client.call_async(&planned.call))
            })
            .collect();
        for (expect, sent, future) in batch {
            let outcome = pollster::block_on(future);
            let latency = sent.elapsed();
            let index = (sent - started).as_millis() as usize / window.as_millis().max(1) as usize;
            if windows.len() <= index {
                windows.resize_with(index + 1, BTreeMap::new);
            }
            *windows[index].entry(bucket(latency)).or_default() += 1;
            match (expect, outcome) {
                (Expect::Stdout(want), Ok(output)) => {
                    if output.stdout == want {
                        ok += 1;
                        answered.insert(hash(&want));
                    } else if answered.contains(&hash(&output.stdout)) {
                        duplicated += 1;
                    } else {
                        crossed += 1;
                    }
                }
                (Expect::Error(kind), Err(err)) if err.kind() == kind => ok += 1,
                (_, Err(err)) => {
                    lost += 1;
                    *errors.entry(err.kind().as_str().to_owned()).or_default() += 1;
                }
                (Expect::Error(_), Ok(_)) => crossed += 1,
            }
        }
        seq += WINDOW;
    }
    let windows: Vec<_> = windows
        .into_iter()
        .map(|hist| {
            let named: BTreeMap<_, _> = hist.into_iter().map(|(b, n)| (b.to_string(), n)).collect();
            json!(named)
        })
        .collect();
    println!(
        "{}",
        json!({
            "lang": "rust",
            "client": args.client,
            "calls": args.calls,
            "ok": ok,
            "lost": lost,
            "duplicated": duplicated,
            "crossed": crossed,
            "errors": errors,
            "window_ms": args.window_ms,
            "windows": windows,
        })
    );
    Ok(())
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// A latency's histogram bucket: about 5% wide (`bench/soak.py` turns buckets back into
/// microseconds the same way for every language).
fn bucket(latency: Duration) -> u32 {
    let us = latency.as_secs_f64() * 1e6;
    (us.max(1.0).ln() * 20.0) as u32
}
