//! `megavisor pack`: modules + their entries files (or a bundle spec file) + key → a signed
//! bundle, with progress on stderr while modules are pre-initialized and compiled.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use megavisor_core::pack::{BundleSpec, ModuleSource, PackEvent, PackSpec, pack};
use megavisor_core::{EngineOptions, Error, ManifestSigner, Result};

use crate::args::PackArgs;
use crate::render::outln;

pub fn run(args: PackArgs) -> Result<ExitCode> {
    let signer = ManifestSigner::load(&args.key)?;
    let (name, modules) = match (&args.spec, &args.wasm, &args.entries) {
        (Some(path), _, _) => {
            let spec = BundleSpec::load(path)?;
            if spec.modules.is_empty() {
                return Err(Error::BadRequest(format!(
                    "bundle spec {} lists no modules: a bundle needs at least one module",
                    path.display()
                )));
            }
            (spec.name, spec.modules)
        }
        (None, Some(wasm), Some(entries)) => {
            let mut modules = vec![ModuleSource {
                wasm: wasm.clone(),
                entries: entries.clone(),
            }];
            modules.extend(args.module.iter().cloned());
            (args.name.clone(), modules)
        }
        _ => (args.name.clone(), args.module.clone()),
    };
    if modules.is_empty() {
        return Err(Error::BadRequest(
            "pack needs --module FILE.wasm:ENTRIES.json (or --spec FILE)".to_owned(),
        ));
    }
    let spec = PackSpec {
        modules: &modules,
        name: &name,
        out_dir: &args.out,
        engine: &EngineOptions::default(),
    };
    let mut spinner: Option<Spinner> = None;
    let manifest = pack(&spec, &signer, &mut |event| match event {
        PackEvent::HashingOriginals => {
            eprintln!("pack: hashing native originals named by the entries")
        }
        PackEvent::Preinitializing { module, function } => {
            eprintln!("pack: pre-initializing module {module} by running {function}")
        }
        PackEvent::Compiling { module, wasm_bytes } => {
            spinner = Some(Spinner::start(module, wasm_bytes))
        }
        PackEvent::Compiled { cwasm_bytes, .. } => {
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
        "bundle {:?} written to {}: {} modules, {} entries",
        manifest.name,
        args.out.display(),
        manifest.modules.len(),
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
    fn start(module: String, wasm_bytes: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let flag = done.clone();
        let handle = std::thread::spawn(move || {
            let frames = ['|', '/', '-', '\\'];
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                eprint!(
                    "\rpack: compiling module {module} ({} KiB of wasm) with Cranelift {} {:.1}s",
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
