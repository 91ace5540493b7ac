//! `megavisor keygen --out FILE`: a new Ed25519 signing key (FILE, mode 0600) and its public
//! half (FILE.pub).

use std::process::ExitCode;

use megavisor_core::{ManifestSigner, Result};

use crate::args::KeygenArgs;
use crate::render::outln;

pub fn run(args: KeygenArgs) -> Result<ExitCode> {
    let mut public = args.out.clone().into_os_string();
    public.push(".pub");
    let signer = ManifestSigner::generate();
    signer.save(&args.out, public.as_ref())?;
    outln!(
        "key {}: secret {}, public {}",
        signer.public().id(),
        args.out.display(),
        public.to_string_lossy()
    );
    Ok(ExitCode::SUCCESS)
}
