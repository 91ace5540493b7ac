//! The supervisor cases: a real `megavisor serve` process and real client processes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::samples::Samples;

/// A `megavisor serve` child (ring and gRPC sockets), stopped with SIGTERM on drop.
pub struct Supervisor {
    child: Child,
    socket: PathBuf,
    grpc_socket: PathBuf,
}

impl Supervisor {
    /// Starts `megavisor serve` on a private socket and waits for its readiness line.
    pub fn start(
        megavisor: &Path,
        bundle: &Path,
        key: &Path,
        concurrency: u32,
    ) -> std::io::Result<Self> {
        let socket =
            std::env::temp_dir().join(format!("megavisor-bench-{}.sock", std::process::id()));
        let grpc_socket = socket.with_extension("grpc");
        let mut child = Command::new(megavisor)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--grpc-socket")
            .arg(&grpc_socket)
            .arg("--bundle")
            .arg(bundle)
            .arg("--trusted-key")
            .arg(key)
            .arg("--max-concurrency")
            .arg(concurrency.to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut ready)?;
        if !ready.starts_with("megavisor ready") {
            let _ = child.kill();
            return Err(std::io::Error::other(format!(
                "supervisor did not start: {ready:?}"
            )));
        }
        Ok(Supervisor {
            child,
            socket,
            grpc_socket,
        })
    }

    /// The ring socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The gRPC socket it listens on.
    pub fn grpc_socket(&self) -> &Path {
        &self.grpc_socket
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Runs `clients` client processes of this binary against `socket` at once and gathers
/// their samples; the wall time runs from the go signal to the last client's end.
pub fn measure_clients(
    socket: &Path,
    transport: &str,
    clients: usize,
    warmup: usize,
    iterations: usize,
) -> Result<(Samples, Duration), Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let mut children: Vec<(Child, ChildStdin, BufReader<ChildStdout>)> = Vec::new();
    for _ in 0..clients {
        let mut child = Command::new(&me)
            .args(["client", "--transport", transport, "--tool", "true"])
            .arg("--socket")
            .arg(socket)
            .args([
                "--warmup",
                &warmup.to_string(),
                "--iterations",
                &iterations.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut ready = String::new();
        stdout.read_line(&mut ready)?;
        if !ready.contains("ready") {
            return Err(format!("client did not get ready: {ready:?}").into());
        }
        children.push((child, stdin, stdout));
    }
    for (_, stdin, _) in &mut children {
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    let mut samples = Vec::with_capacity(clients * iterations);
    let mut wall = Duration::ZERO;
    for (mut child, _, mut stdout) in children {
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("client failed ({status}): {line}").into());
        }
        let result: Value = serde_json::from_str(&line)?;
        let ns = result["samples_ns"].as_array().ok_or("no samples")?;
        samples.extend(
            ns.iter()
                .filter_map(Value::as_u64)
                .map(Duration::from_nanos),
        );
        wall = wall.max(Duration::from_nanos(
            result["wall_ns"].as_u64().ok_or("no wall")?,
        ));
    }
    Ok((Samples::from_unsorted(samples), wall))
}
