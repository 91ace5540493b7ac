//! `megavisor pack`: megabinary + entries file + key → a signed bundle, with progress on
//! stderr while Cranelift compiles.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use megavisor_core::pack::{PackEvent, PackSpec, pack};
use megavisor_core::{EngineOptions, ManifestSigner, Result};

use crate::args::PackArgs;
use crate::render::outln;

pub fn run(args: PackArgs) -> Result<ExitCode> {
    let signer = ManifestSigner::load(&args.key)?;
    let spec = PackSpec {
        wasm: &args.wasm,
        entries: &args.entries,
        name: &args.name,
        out_dir: &args.out,
        engine: &EngineOptions::default(),
    };
    let mut spinner: Option<Spinner> = None;
    let manifest = pack(&spec, &signer, &mut |event| match event {
        PackEvent::HashingOriginals => {
            eprintln!("pack: hashing native originals named by the entries")
        }
        PackEvent::Compiling { wasm_bytes } => spinner = Some(Spinner::start(wasm_bytes)),
        PackEvent::Compiled { cwasm_bytes } => {
            if let Some(s) = spinner.take() {
                s.stop(cwasm_bytes);
            }
        }
        PackEvent::Signed { key_id } => eprintln!("pack: signed manifest with key {key_id}"),
    });
    if let Some(s) = spinner.take() {
        s.stop(0);
    }
    let manifest = manifest?;
    outln!(
        "bundle {:?} written to {}: {} entries",
        manifest.name,
        args.out.display(),
        manifest.entries.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Shows elapsed compile time on stderr until stopped.
struct Spinner {
    done: Arc<AtomicBool>,
    started: Instant,
    handle: JoinHandle<()>,
}

impl Spinner {
    fn start(wasm_bytes: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let flag = done.clone();
        let handle = std::thread::spawn(move || {
            let frames = ['|', '/', '-', '\\'];
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                eprint!(
                    "\rpack: compiling {} KiB of wasm with Cranelift {} {:.1}s",
                    wasm_bytes / 1024,
                    frames[i % frames.len()],
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Spinner {
            done,
            started,
            handle,
        }
    }

    fn stop(self, cwasm_bytes: u64) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        eprintln!(
            "\rpack: compiled in {:.2}s ({} KiB of native code)            ",
            self.started.elapsed().as_secs_f64(),
            cwasm_bytes / 1024
        );
    }
}
