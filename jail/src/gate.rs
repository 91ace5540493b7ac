//! The exec gate: Landlock, asked to handle `LANDLOCK_ACCESS_FS_EXECUTE`, grants it on
//! exactly the files the caller hashed and allowed, and the kernel then refuses every other
//! `execve`/`execveat` of the tool and of everything it starts with `EACCES`. The grant is
//! on the inode opened here, so a file replaced after the check (a new inode) is not
//! granted, and one rewritten in place is caught by its size and modification time.
//!
//! A kernel without Landlock fails the jailer: a gated tool never runs ungated.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use landlock::{
    ABI, AccessFs, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use megavisor_jail::GrantedFile;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Restricts this process, and all it starts, to executing `granted` and `binary` (the
/// tool, checked by the caller; a sealed memory copy of it needs no grant).
pub fn restrict(granted: &[GrantedFile], binary: BorrowedFd) -> Result<(), String> {
    let unsupported = |e: landlock::RulesetError| {
        format!(
            "exec gate: Landlock is needed and the kernel refused it ({e}); refusing to run ungated"
        )
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::Execute)
        .map_err(unsupported)?
        .create()
        .map_err(unsupported)?;
    // A sealed memory copy (what the caller executes when it allowed the tool by digest)
    // lies on no file system that Landlock governs: it takes no rule, and needs none.
    if !is_memory_file(binary) {
        ruleset = ruleset
            .add_rule(PathBeneath::new(binary, AccessFs::Execute))
            .map_err(|e| format!("exec gate: grant the tool: {e}"))?;
    }
    for file in granted {
        let fd = open_unchanged(file)?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd.as_fd(), AccessFs::Execute))
            .map_err(|e| format!("exec gate: grant {}: {e}", file.path.display()))?;
    }
    let status = ruleset.restrict_self().map_err(unsupported)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!(
            "exec gate: Landlock enforced the gate only {:?} (ABI {:?} wanted); refusing to \
             run ungated",
            status.ruleset,
            ABI::V1
        ));
    }
    Ok(())
}

/// Whether `fd` is an anonymous memory file (`memfd_create`).
fn is_memory_file(fd: BorrowedFd) -> bool {
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:"))
}

/// Opens a granted file, refusing it when it is not the content that was hashed.
fn open_unchanged(file: &GrantedFile) -> Result<OwnedFd, String> {
    let fd = nix::fcntl::open(
        &file.path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("exec gate: open {}: {e}", file.path.display()))?;
    let metadata = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| format!("exec gate: stat {}: {e}", file.path.display()))?;
    let ns = |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    if !metadata.is_file()
        || metadata.dev() != file.device
        || metadata.ino() != file.inode
        || metadata.size() != file.size
        || ns(metadata.mtime(), metadata.mtime_nsec()) != file.modified_ns
        || ns(metadata.ctime(), metadata.ctime_nsec()) != file.changed_ns
    {
        return Err(format!(
            "exec gate: {} changed after it was hashed; refusing to start",
            file.path.display()
        ));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A kernel without Landlock, as the gate meets one: `landlock_create_ruleset` answers
    /// `ENOSYS` (a seccomp filter on a thread of its own says so here).
    #[test]
    fn a_kernel_without_landlock_refuses_the_gate() {
        let refused = std::thread::spawn(|| {
            let arch = std::env::consts::ARCH
                .try_into()
                .expect("a known architecture");
            let filter = seccompiler::SeccompFilter::new(
                [(libc::SYS_landlock_create_ruleset, vec![])]
                    .into_iter()
                    .collect(),
                seccompiler::SeccompAction::Allow,
                seccompiler::SeccompAction::Errno(libc::ENOSYS as u32),
                arch,
            )
            .expect("the filter builds");
            let program: seccompiler::BpfProgram = filter.try_into().expect("it compiles");
            seccompiler::apply_filter(&program).expect("it installs on this thread");
            let binary = std::fs::File::open("/bin/true").unwrap();
            restrict(&[], binary.as_fd())
        })
        .join()
        .expect("the thread ends");
        let err = refused.expect_err("no Landlock, no gated tool");
        assert!(err.contains("refusing to run ungated"), "{err}");
    }
}
