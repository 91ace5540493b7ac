//! Acting on files as a peer, on the calling thread only.
//!
//! Linux keeps the filesystem uid and gid and the supplementary groups per thread (the C
//! library's `setgroups` changes every thread of the process; the raw system call changes
//! only the caller's), so the thread that runs a peer's call can open, create and list files
//! with the peer's identity, under the kernel's own permission checks, and return to the
//! supervisor's identity afterwards. Changing the filesystem uid away from 0 also clears the
//! capabilities that bypass file permissions (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`, ...);
//! changing it back restores them.

use crate::caller::Credentials;
use crate::error::{Error, Result};

/// The calling thread acting on files as a peer until this is dropped.
pub(crate) struct AsPeer {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl AsPeer {
    /// Makes the calling thread's file access that of `peer`: its uid, gid and groups.
    /// Refused (nothing changed) when this process may not take another identity.
    pub(crate) fn assume(peer: &Credentials) -> Result<Self> {
        let saved = AsPeer {
            uid: fs_uid(),
            gid: fs_gid(),
            groups: thread_groups()?,
        };
        let refused = |what: &str| {
            Error::NotAllowed(format!(
                "cannot open files as uid {} gid {}: this process may not change its {what} (it needs CAP_SETUID and CAP_SETGID, as a root supervisor has); a peer of another uid can use no mounts here",
                peer.uid, peer.gid
            ))
        };
        set_thread_groups(&peer.groups).map_err(|_| refused("groups"))?;
        // SAFETY: setfsgid and setfsuid take any id and change only this thread.
        unsafe { libc::setfsgid(peer.gid) };
        if fs_gid() != peer.gid {
            saved.restore();
            return Err(refused("filesystem gid"));
        }
        // SAFETY: as above.
        unsafe { libc::setfsuid(peer.uid) };
        if fs_uid() != peer.uid {
            saved.restore();
            return Err(refused("filesystem uid"));
        }
        Ok(saved)
    }

    fn restore(&self) {
        // The uid first: back to the supervisor's, it regains the capabilities that let it
        // set the rest.
        // SAFETY: setfsuid and setfsgid take any id and change only this thread.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
        let restored =
            set_thread_groups(&self.groups).is_ok() && fs_uid() == self.uid && fs_gid() == self.gid;
        if !restored {
            // A guest thread left with a peer's identity would serve the next caller with
            // it. This cannot happen to a process that could take the identity; if it does,
            // stopping is the only safe answer.
            tracing::error!("cannot return a thread to the supervisor's identity; aborting");
            std::process::abort();
        }
    }
}

impl Drop for AsPeer {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The calling thread's filesystem uid (`setfsuid` with an invalid id changes nothing and
/// returns the current one).
fn fs_uid() -> libc::uid_t {
    // SAFETY: an invalid id is refused without effect.
    unsafe { libc::setfsuid(libc::uid_t::MAX) as libc::uid_t }
}

/// The calling thread's filesystem gid.
fn fs_gid() -> libc::gid_t {
    // SAFETY: an invalid id is refused without effect.
    unsafe { libc::setfsgid(libc::gid_t::MAX) as libc::gid_t }
}

/// The calling thread's supplementary groups.
fn thread_groups() -> Result<Vec<libc::gid_t>> {
    let failed = |e| Error::io("getgroups", "read the thread's groups with", e);
    // SAFETY: a size of 0 asks only for the count.
    let count = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<u32>()) };
    if count < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    let mut groups = vec![0; count as usize];
    // SAFETY: the buffer holds `count` ids.
    let got = unsafe { libc::syscall(libc::SYS_getgroups, count, groups.as_mut_ptr()) };
    if got < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    groups.truncate(got as usize);
    Ok(groups)
}

/// Sets the calling thread's supplementary groups with the raw system call, which (unlike
/// the C library's wrapper) leaves the process's other threads alone.
fn set_thread_groups(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `groups`.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_acts_as_the_peer_and_returns_while_others_stay_themselves() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: taking another identity needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::write(&private, "root only").unwrap();
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let nobody = Credentials {
            uid: 65534,
            gid: 65534,
            groups: Vec::new().into(),
        };
        let (entered, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                let as_peer = AsPeer::assume(&nobody).unwrap();
                entered.wait();
                let refused = std::fs::read(&private).unwrap_err();
                assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
                release.wait();
                drop(as_peer);
                assert!(std::fs::read(&private).is_ok(), "back to root");
            });
            entered.wait();
            // Another thread of the process is still root while that one is not.
            assert!(std::fs::read(&private).is_ok());
            release.wait();
        });
    }
}
