//! `megavisor-bench client`: one client process of a supervisor case. It connects, warms up,
//! waits for the parent's go (a line on stdin) so that all clients start together, makes
//! its calls and prints its samples as one JSON line.
//!
//! With `--check` it is a correctness load instead: several threads share one connection,
//! every call sends a unique payload through `cat` (some larger than a ring slot, so they
//! spill), and every reply must be exactly its own payload.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use megavisor_client::{Call, Client, ConnectOptions, Transport};
use serde_json::json;

/// Arguments of one client process.
#[derive(Args)]
pub struct ClientArgs {
    /// The supervisor's socket.
    #[arg(long)]
    socket: PathBuf,
    /// `ring` or `socket`.
    #[arg(long, default_value = "ring")]
    transport: String,
    /// Tool to call (timing mode).
    #[arg(long, default_value = "true")]
    tool: String,
    /// Calls made before the go signal.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Calls timed (timing mode) or made per thread (check mode).
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    /// Check mode: unique payloads through `cat`, every reply compared with its request.
    #[arg(long)]
    check: bool,
    /// Threads sharing the connection (check mode).
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

/// Runs one client process.
pub fn run(args: ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    let transport = match args.transport.as_str() {
        "ring" => Transport::Ring,
        "socket" => Transport::Socket,
        other => return Err(format!("unknown transport {other:?}").into()),
    };
    let options = ConnectOptions {
        transport,
        ..ConnectOptions::default()
    };
    let client = Client::connect_with(&args.socket, &options)?;
    if args.check {
        return check(client, &args);
    }
    let call = Call::new(&args.tool);
    for _ in 0..args.warmup {
        client.call(&call)?;
    }
    println!("{}", json!({ "ready": true }));
    std::io::stdin().lock().read_line(&mut String::new())?;
    let mut samples = Vec::with_capacity(args.iterations);
    let started = Instant::now();
    for _ in 0..args.iterations {
        let t = Instant::now();
        let output = client.call(&call)?;
        samples.push(t.elapsed().as_nanos() as u64);
        if output.exit_code != 0 {
            return Err(format!("{} exited {}", args.tool, output.exit_code).into());
        }
    }
    let wall = started.elapsed().as_nanos() as u64;
    println!("{}", json!({ "samples_ns": samples, "wall_ns": wall }));
    Ok(())
}

fn check(client: Client, args: &ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let client = Arc::new(client);
    let threads: Vec<_> = (0..args.threads)
        .map(|thread| {
            let client = client.clone();
            let iterations = args.iterations;
            std::thread::spawn(move || -> Result<usize, String> {
                let mut checked = 0;
                for i in 0..iterations {
                    // Every 50th payload is bigger than a ring slot and spills.
                    let pad = if i % 50 == 0 { 6000 } else { i % 97 };
                    let payload = format!("{pid}:{thread}:{i}:{}", "x".repeat(pad));
                    let call = Call::new("cat").stdin(payload.as_bytes());
                    let output = if i % 3 == 0 {
                        pollster::block_on(client.call_async(&call))
                    } else {
                        client.call(&call)
                    }
                    .map_err(|e| format!("call {pid}:{thread}:{i}: {e} ({})", e.kind()))?;
                    if output.stdout != payload.as_bytes() {
                        return Err(format!(
                            "call {pid}:{thread}:{i} got someone else's reply: {:?}",
                            String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(40)])
                        ));
                    }
                    checked += 1;
                }
                Ok(checked)
            })
        })
        .collect();
    let mut checked = 0;
    for thread in threads {
        checked += thread.join().map_err(|_| "a client thread panicked")??;
    }
    println!("{}", json!({ "checked": checked }));
    Ok(())
}
