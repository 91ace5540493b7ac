//! The seccomp filter of the threads that run guest code.
//!
//! A guest that escaped the WebAssembly sandbox would find itself on one of these threads.
//! The filter leaves what the engine needs (memory mapping, futexes, reading files, creating
//! threads) and refuses what an escape would want first: starting programs (`EACCES`, the
//! answer to an execve the manifest does not allow), creating processes, debugging other
//! processes, changing mounts or namespaces, loading kernel code, and reading other
//! processes' memory (`EPERM`). Filters are per thread and inherited by threads these
//! threads create; the supervisor's other threads are not filtered. Allowlisted native tools
//! are the one sanctioned way to start a program: the runtime starts them on a thread of
//! its own, made (unfiltered) with the runtime on the main thread, and sandboxes them with
//! megavisor-jail.

use megavisor_jail::filters::{self, FilterError};
use seccompiler::BpfProgram;

/// The compiled filters (the guest thread set of `jail/seccomp/filters.json`), built once
/// and installed on each guest thread.
pub struct GuestFilter {
    programs: Vec<BpfProgram>,
}

impl GuestFilter {
    /// Compiles the filters for this machine's architecture, from `source` (an operator's
    /// filters, as the policy names them) or the built-in ones.
    pub fn compile(source: Option<&str>) -> Result<Self, FilterError> {
        Ok(GuestFilter {
            programs: filters::compile(filters::GUEST_THREAD, source)?,
        })
    }

    /// Installs the filters on the calling thread (and sets `no_new_privs` on it).
    pub fn install_on_current_thread(&self) -> Result<(), FilterError> {
        filters::install(&self.programs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn a_filtered_thread_cannot_exec_fork_or_mount_but_can_make_threads() {
        let filter = GuestFilter::compile(None).unwrap();
        std::thread::spawn(move || {
            filter.install_on_current_thread().unwrap();
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert!(status.contains("Seccomp:\t2"), "{status}");

            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: valid NUL-terminated argv and envp; the call is refused before it runs.
            let rc = unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            assert_eq!((rc, errno()), (-1, libc::EACCES), "execve refused");

            // SAFETY: a raw fork syscall, refused by the filter; had it succeeded the child
            // would exit at once.
            let rc = unsafe { libc::syscall(libc::SYS_fork) };
            if rc == 0 {
                // SAFETY: in the (unexpected) child, leave without running anything else.
                unsafe { libc::_exit(0) };
            }
            assert_eq!((rc, errno()), (-1, libc::EPERM), "fork refused");

            // SAFETY: a raw clone that would make a process (no CLONE_THREAD); refused.
            let rc = unsafe {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0)
            };
            if rc == 0 {
                // SAFETY: as above.
                unsafe { libc::_exit(0) };
            }
            assert_eq!((rc, errno()), (-1, libc::EPERM), "process clone refused");

            let (src, dst) = (c"none", c"/tmp");
            // SAFETY: valid C strings; refused by the filter before the kernel looks at them.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            assert_eq!((rc, errno()), (-1, libc::EPERM), "mount refused");

            let inner = std::thread::spawn(|| 42).join().unwrap();
            assert_eq!(inner, 42, "threads can still be created");
        })
        .join()
        .unwrap();
    }
}
