//! One cgroup per sandboxed call: its limits (memory, CPU quota, processes, IO weight) and
//! what it used (peak memory, user and system CPU time, whether a limit was hit).
//!
//! Through cgroup v2 where the unified hierarchy offers the controllers the limits need,
//! else through the v1 controllers (the machines here mount v1 controllers with an empty v2
//! hierarchy beside them). Each call's group is made under the supervisor's own group of
//! each hierarchy, joined by the jailer before anything runs, and removed afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Resource limits of a sandboxed call; `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceLimits {
    /// Memory (and swap) in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time per wall-clock time, in cores (e.g. 0.5).
    pub cpu_cores: Option<f64>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// Relative IO weight, 1 to 10000 (v2) or 10 to 1000 (v1).
    pub io_weight: Option<u32>,
}

/// Which cgroup hierarchy to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupVersion {
    /// v2 if it offers every controller the limits need, else v1.
    #[default]
    Auto,
    /// Only the unified (v2) hierarchy.
    V2,
    /// Only the v1 controllers.
    V1,
}

/// What a call used, read from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CgroupUsage {
    pub peak_memory_bytes: Option<u64>,
    pub user_us: Option<u64>,
    pub system_us: Option<u64>,
    pub oom_killed: bool,
    pub pids_limited: bool,
}

/// The mounted hierarchies and this process's place in them.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchies {
    /// This process's cgroup in the unified hierarchy, if it is mounted.
    unified: Option<PathBuf>,
    /// This process's cgroup in each v1 controller's hierarchy.
    v1: BTreeMap<String, PathBuf>,
}

/// A call's cgroup (one directory for v2, one per controller for v1).
#[derive(Debug)]
pub(crate) struct CallCgroup {
    version: CgroupVersion,
    /// Directory by controller (`""` for the v2 one).
    dirs: BTreeMap<String, PathBuf>,
}

const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "blkio"];

impl Hierarchies {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub(crate) fn detect() -> Result<Self> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let membership = read("/proc/self/cgroup")?;
        let mut unified = None;
        let mut v1 = BTreeMap::new();
        for line in mountinfo.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [TAGS] - FSTYPE SOURCE SUPER_OPTIONS
            let (before, after) = line.split_once(" - ").unwrap_or((line, ""));
            let mount_point = before.split(' ').nth(4).unwrap_or_default();
            let mut after = after.split(' ');
            let (fstype, super_options) = (after.next(), after.nth(1).unwrap_or_default());
            match fstype {
                Some("cgroup2") => unified = Some(PathBuf::from(mount_point)),
                Some("cgroup") => {
                    for controller in super_options.split(',').filter(|o| CONTROLLERS.contains(o)) {
                        v1.insert(controller.to_owned(), PathBuf::from(mount_point));
                    }
                }
                _ => {}
            }
        }
        // Place each mount at this process's own group: "N:controllers:/path" (v2: "0::/path").
        let mut own = BTreeMap::new();
        for line in membership.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (
                fields.next(),
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or("/"),
            );
            let relative = path.trim_start_matches('/');
            if controllers.is_empty() {
                unified = unified.map(|mount| mount.join(relative));
            } else {
                for controller in controllers.split(',') {
                    own.insert(controller.to_owned(), relative.to_owned());
                }
            }
        }
        let v1 = v1
            .into_iter()
            .map(|(controller, mount)| {
                let relative = own.get(&controller).cloned().unwrap_or_default();
                (controller, mount.join(relative))
            })
            .collect();
        Ok(Hierarchies { unified, v1 })
    }

    /// Removes the call cgroups a supervisor that died left behind (`megavisor-PID-N` whose
    /// PID is gone), killing what still runs in them.
    pub(crate) fn sweep_stale(&self) {
        let parents = self.v1.values().chain(self.unified.iter());
        for parent in parents {
            let Ok(children) = fs::read_dir(parent) else {
                continue;
            };
            for child in children.flatten() {
                let name = child.file_name().to_string_lossy().into_owned();
                let Some(owner) = name
                    .strip_prefix("megavisor-")
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok())
                else {
                    continue;
                };
                if owner != std::process::id() && !Path::new(&format!("/proc/{owner}")).exists() {
                    tracing::warn!(cgroup = %child.path().display(), "removing a stale call cgroup");
                    let stale = CallCgroup {
                        version: CgroupVersion::V1,
                        dirs: BTreeMap::from([(String::new(), child.path())]),
                    };
                    stale.remove();
                }
            }
        }
    }

    /// Controllers the unified hierarchy offers under this process's group.
    fn unified_controllers(&self) -> Vec<String> {
        self.unified
            .as_ref()
            .and_then(|dir| fs::read_to_string(dir.join("cgroup.controllers")).ok())
            .map(|list| list.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Makes a call's cgroup with `limits`, in the hierarchy `version` picks.
    pub(crate) fn create(
        &self,
        version: CgroupVersion,
        limits: &ResourceLimits,
    ) -> Result<CallCgroup> {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "megavisor-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        );
        let needed = needed_controllers(limits);
        let v2_offers = self.unified_controllers();
        let v2_fits =
            self.unified.is_some() && needed.iter().all(|c| v2_offers.iter().any(|o| o == c));
        let version = match version {
            CgroupVersion::Auto if v2_fits => CgroupVersion::V2,
            CgroupVersion::Auto => CgroupVersion::V1,
            chosen => chosen,
        };
        let group = match version {
            CgroupVersion::V2 => {
                let Some(parent) = &self.unified else {
                    return Err(unsupported("cgroup v2 is not mounted"));
                };
                if let Some(missing) = needed.iter().find(|c| !v2_offers.iter().any(|o| o == *c)) {
                    return Err(unsupported(&format!(
                        "cgroup v2 at {} does not offer the {missing} controller (it offers: {})",
                        parent.display(),
                        if v2_offers.is_empty() {
                            "none".to_owned()
                        } else {
                            v2_offers.join(" ")
                        }
                    )));
                }
                for controller in &needed {
                    // Best effort: already enabled, or refused because this group has
                    // processes (then the write of the limit below says so).
                    let _ = fs::write(
                        parent.join("cgroup.subtree_control"),
                        format!("+{controller}"),
                    );
                }
                let dir = make_dir(&parent.join(&name))?;
                let group = CallCgroup {
                    version,
                    dirs: BTreeMap::from([(String::new(), dir)]),
                };
                if let Err(err) = group.limit_v2(limits) {
                    group.remove();
                    return Err(err);
                }
                group
            }
            _ => {
                let mut dirs = BTreeMap::new();
                for controller in CONTROLLERS {
                    if let Some(parent) = self.v1.get(*controller) {
                        // cpu and cpuacct may share one hierarchy: one directory serves both.
                        let dir = parent.join(&name);
                        if !dirs.values().any(|d| d == &dir) {
                            make_dir(&dir)?;
                        }
                        dirs.insert((*controller).to_owned(), dir);
                    }
                }
                let group = CallCgroup {
                    version: CgroupVersion::V1,
                    dirs,
                };
                // v1 calls the io controller blkio.
                let v1_name = |c: &&'static str| if *c == "io" { "blkio" } else { *c };
                if let Some(missing) = needed
                    .iter()
                    .map(v1_name)
                    .find(|c| !group.dirs.contains_key(*c))
                {
                    group.remove();
                    return Err(unsupported(&format!(
                        "no cgroup v1 hierarchy has the {missing} controller"
                    )));
                }
                if let Err(err) = group.limit_v1(limits) {
                    group.remove();
                    return Err(err);
                }
                group
            }
        };
        Ok(group)
    }
}

fn needed_controllers(limits: &ResourceLimits) -> Vec<&'static str> {
    let mut needed = Vec::new();
    if limits.memory_bytes.is_some() {
        needed.push("memory");
    }
    if limits.cpu_cores.is_some() {
        needed.push("cpu");
    }
    if limits.pids.is_some() {
        needed.push("pids");
    }
    if limits.io_weight.is_some() {
        needed.push("io");
    }
    needed
}

impl CallCgroup {
    /// The directories the jailer joins.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.dirs.values().cloned().collect();
        dirs.dedup();
        dirs
    }

    /// Which hierarchy this group lives in.
    pub(crate) fn version(&self) -> CgroupVersion {
        self.version
    }

    fn file(&self, controller: &str, name: &str) -> Option<PathBuf> {
        let key = if self.version == CgroupVersion::V2 {
            ""
        } else {
            controller
        };
        self.dirs.get(key).map(|dir| dir.join(name))
    }

    fn limit_v2(&self, limits: &ResourceLimits) -> Result<()> {
        if let Some(bytes) = limits.memory_bytes {
            self.write("memory", "memory.max", &bytes.to_string())?;
            self.write("memory", "memory.swap.max", "0").ok();
        }
        if let Some(cores) = limits.cpu_cores {
            let period = 100_000u64;
            self.write(
                "cpu",
                "cpu.max",
                &format!("{} {period}", (cores * period as f64).max(1000.0) as u64),
            )?;
        }
        if let Some(pids) = limits.pids {
            self.write("pids", "pids.max", &pids.to_string())?;
        }
        if let Some(weight) = limits.io_weight {
            self.write(
                "io",
                "io.weight",
                &format!("default {}", weight.clamp(1, 10_000)),
            )?;
        }
        Ok(())
    }

    fn limit_v1(&self, limits: &ResourceLimits) -> Result<()> {
        if let Some(bytes) = limits.memory_bytes {
            self.write("memory", "memory.limit_in_bytes", &bytes.to_string())?;
            // Where swap is accounted, it may not extend the limit.
            self.write("memory", "memory.memsw.limit_in_bytes", &bytes.to_string())
                .ok();
        }
        if let Some(cores) = limits.cpu_cores {
            let period = 100_000u64;
            self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
            self.write(
                "cpu",
                "cpu.cfs_quota_us",
                &((cores * period as f64).max(1000.0) as u64).to_string(),
            )?;
        }
        if let Some(pids) = limits.pids {
            self.write("pids", "pids.max", &pids.to_string())?;
        }
        if let Some(weight) = limits.io_weight {
            let weight = weight.clamp(10, 1000).to_string();
            self.write("blkio", "blkio.weight", &weight)
                .or_else(|_| self.write("blkio", "blkio.bfq.weight", &weight))
                .map_err(|_| unsupported("the blkio controller here has no weight (neither blkio.weight nor blkio.bfq.weight)"))?;
        }
        Ok(())
    }

    fn write(&self, controller: &str, name: &str, value: &str) -> Result<()> {
        let path = self
            .file(controller, name)
            .ok_or_else(|| unsupported(&format!("no {controller} controller for {name}")))?;
        fs::write(&path, value).map_err(|e| Error::io(&path, "write cgroup limit", e))
    }

    fn read(&self, controller: &str, name: &str) -> Option<String> {
        self.file(controller, name)
            .and_then(|path| fs::read_to_string(path).ok())
    }

    /// What the call used.
    pub(crate) fn usage(&self) -> CgroupUsage {
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let keyed = |text: Option<String>, key: &str| {
            text.and_then(|t| {
                t.lines().find_map(|line| {
                    line.strip_prefix(key)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            })
        };
        if self.version == CgroupVersion::V2 {
            let stat = self.read("cpu", "cpu.stat");
            CgroupUsage {
                peak_memory_bytes: number(self.read("memory", "memory.peak")),
                user_us: keyed(stat.clone(), "user_usec "),
                system_us: keyed(stat, "system_usec "),
                oom_killed: keyed(self.read("memory", "memory.events"), "oom_kill ").unwrap_or(0)
                    > 0,
                pids_limited: keyed(self.read("pids", "pids.events"), "max ").unwrap_or(0) > 0,
            }
        } else {
            CgroupUsage {
                peak_memory_bytes: number(self.read("memory", "memory.max_usage_in_bytes")),
                user_us: number(self.read("cpuacct", "cpuacct.usage_user")).map(|ns| ns / 1000),
                system_us: number(self.read("cpuacct", "cpuacct.usage_sys")).map(|ns| ns / 1000),
                oom_killed: keyed(self.read("memory", "memory.oom_control"), "oom_kill ")
                    .unwrap_or(0)
                    > 0,
                pids_limited: keyed(self.read("pids", "pids.events"), "max ").unwrap_or(0) > 0,
            }
        }
    }

    /// Kills every process in the group (a forking member may add more while we kill, so
    /// until none is left).
    pub(crate) fn kill_members(&self) {
        for dir in self.dirs() {
            // v2 has cgroup.kill (Linux 5.14); otherwise kill the members one by one.
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..100 {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// Kills whatever is left in the group and removes it.
    pub(crate) fn remove(self) {
        self.kill_members();
        for dir in self.dirs() {
            // Removal fails while the last member is still being torn down: retry briefly.
            for _ in 0..100 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

fn make_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir(dir).map_err(|e| Error::io(dir, "create cgroup", e))?;
    Ok(dir.to_owned())
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))
}

/// This host cannot enforce a configured limit: the supervisor's configuration or the
/// host's cgroups need changing, not the request.
fn unsupported(why: &str) -> Error {
    Error::Io {
        path: PathBuf::from("/sys/fs/cgroup"),
        action: "enforce resource limits with",
        message: why.to_owned(),
    }
}

/// The file protocol of both hierarchies, against directories laid out as cgroupfs lays
/// them out (the kernel's own are exercised by `core/tests/sandbox.rs`, as root; there, on
/// this project's machines, v2 offers no controller to limit with).
#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    fn limits() -> ResourceLimits {
        ResourceLimits {
            memory_bytes: Some(64 << 20),
            cpu_cores: Some(0.5),
            pids: Some(32),
            io_weight: Some(200),
        }
    }

    #[test]
    fn v2_limits_and_usage() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let hierarchies = Hierarchies {
            unified: Some(root.path().to_owned()),
            v1: BTreeMap::new(),
        };
        let group = hierarchies.create(CgroupVersion::Auto, &limits()).unwrap();
        assert_eq!(group.version(), CgroupVersion::V2);
        let dir = group.dirs().pop().unwrap();
        assert_eq!(read(&dir, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(&dir, "cpu.max"), "50000 100000");
        assert_eq!(read(&dir, "pids.max"), "32");
        assert_eq!(read(&dir, "io.weight"), "default 200");
        assert_eq!(
            read(root.path(), "cgroup.subtree_control"),
            "+io",
            "each controller enabled in turn"
        );
        fs::write(dir.join("memory.peak"), "1234567\n").unwrap();
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 30\nuser_usec 20\nsystem_usec 10\n",
        )
        .unwrap();
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(dir.join("pids.events"), "max 5\n").unwrap();
        let usage = group.usage();
        assert_eq!(
            usage,
            CgroupUsage {
                peak_memory_bytes: Some(1_234_567),
                user_us: Some(20),
                system_us: Some(10),
                oom_killed: true,
                pids_limited: true,
            }
        );
    }

    #[test]
    fn v2_without_a_needed_controller_is_refused_naming_it() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let hierarchies = Hierarchies {
            unified: Some(root.path().to_owned()),
            v1: BTreeMap::new(),
        };
        let err = hierarchies
            .create(CgroupVersion::V2, &limits())
            .unwrap_err();
        assert!(err.to_string().contains("memory controller"), "{err}");
        assert!(err.to_string().contains("hugetlb"), "{err}");
    }

    #[test]
    fn v1_limits_and_usage_across_controller_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        let mut v1 = BTreeMap::new();
        for controller in ["memory", "cpu", "cpuacct", "pids", "blkio"] {
            let dir = root.path().join(controller);
            fs::create_dir(&dir).unwrap();
            v1.insert(controller.to_owned(), dir);
        }
        let hierarchies = Hierarchies { unified: None, v1 };
        let group = hierarchies.create(CgroupVersion::Auto, &limits()).unwrap();
        assert_eq!(group.version(), CgroupVersion::V1);
        let dir = |controller: &str| group.dirs.get(controller).unwrap().clone();
        assert_eq!(
            read(&dir("memory"), "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&dir("cpu"), "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&dir("pids"), "pids.max"), "32");
        assert_eq!(read(&dir("blkio"), "blkio.weight"), "200");
        fs::write(dir("memory").join("memory.max_usage_in_bytes"), "777\n").unwrap();
        fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        fs::write(dir("cpuacct").join("cpuacct.usage_user"), "5000\n").unwrap();
        fs::write(dir("cpuacct").join("cpuacct.usage_sys"), "3000\n").unwrap();
        fs::write(dir("pids").join("pids.events"), "max 0\n").unwrap();
        assert_eq!(
            group.usage(),
            CgroupUsage {
                peak_memory_bytes: Some(777),
                user_us: Some(5),
                system_us: Some(3),
                oom_killed: false,
                pids_limited: false,
            }
        );
    }

    #[test]
    fn membership_of_this_process_places_each_hierarchy() {
        let hierarchies = Hierarchies::detect().unwrap();
        for dir in hierarchies.v1.values().chain(hierarchies.unified.iter()) {
            assert!(dir.is_dir(), "{} is not a directory", dir.display());
        }
    }
}
