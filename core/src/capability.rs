//! Capabilities: what an entry may touch, declared in the manifest and only ever narrowed
//! by a request (into a [`Grant`]).
//!
//! - `fs:read:<glob>`: a mount whose guest path matches may be preopened read-only;
//! - `fs:write:<glob>`: a mount whose guest path matches may be preopened read-write;
//! - `env:<pattern>`: environment variables whose name matches may be passed in;
//! - `network:*`, `exec:*`: parsed so manifests can state them, refused when used, because
//!   this runtime grants neither yet.
//!
//! Globs use `/` as a separator: `*` stays within one path component, `**` crosses them.

use std::fmt;
use std::str::FromStr;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// One capability, e.g. `fs:read:/data/**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Read-only mounts at guest paths matching the glob.
    FsRead(String),
    /// Read-write mounts at guest paths matching the glob.
    FsWrite(String),
    /// Environment variables whose names match the pattern.
    Env(String),
    /// Outbound network access (not granted by this runtime).
    Network(String),
    /// Starting other programs (not granted by this runtime).
    Exec(String),
}

impl Capability {
    fn class_and_pattern(&self) -> (&'static str, &str) {
        match self {
            Capability::FsRead(p) => ("fs:read", p),
            Capability::FsWrite(p) => ("fs:write", p),
            Capability::Env(p) => ("env", p),
            Capability::Network(p) => ("network", p),
            Capability::Exec(p) => ("exec", p),
        }
    }

    /// Whether granting `self` also grants `narrower`: the same class, and either the same
    /// pattern or a literal that the pattern matches.
    fn covers(&self, narrower: &Capability) -> bool {
        let (class, pattern) = self.class_and_pattern();
        let (other_class, other_pattern) = narrower.class_and_pattern();
        if class != other_class {
            return false;
        }
        if pattern == other_pattern {
            return true;
        }
        !has_glob_metachar(other_pattern)
            && compile(pattern).is_ok_and(|m| m.is_match(other_pattern))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, pattern) = self.class_and_pattern();
        write!(f, "{class}:{pattern}")
    }
}

impl FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = if let Some(p) = s.strip_prefix("fs:read:") {
            Capability::FsRead(p.to_owned())
        } else if let Some(p) = s.strip_prefix("fs:write:") {
            Capability::FsWrite(p.to_owned())
        } else if let Some(p) = s.strip_prefix("env:") {
            Capability::Env(p.to_owned())
        } else if let Some(p) = s.strip_prefix("network:") {
            Capability::Network(p.to_owned())
        } else if let Some(p) = s.strip_prefix("exec:") {
            Capability::Exec(p.to_owned())
        } else {
            return Err(format!(
                "unknown capability {s:?}: expected fs:read:<glob>, fs:write:<glob>, env:<pattern>, network:<spec> or exec:<spec>"
            ));
        };
        let (_, pattern) = parsed.class_and_pattern();
        if pattern.is_empty() {
            return Err(format!("capability {s:?} has an empty pattern"));
        }
        compile(pattern).map_err(|e| format!("capability {s:?}: {e}"))?;
        Ok(parsed)
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Access mode of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// The guest can read files and list directories.
    ReadOnly,
    /// The guest can also create, write and remove files.
    ReadWrite,
}

/// The capabilities in force for one invocation, compiled for matching.
pub struct Grant {
    read: Vec<GlobMatcher>,
    write: Vec<GlobMatcher>,
    env: Vec<GlobMatcher>,
}

impl Grant {
    /// The grant for an entry declaring `declared`, narrowed to `requested` when given.
    ///
    /// Refuses a requested capability the entry does not declare, and any `network:` or
    /// `exec:` capability left in force.
    pub fn new(
        tool: &str,
        declared: &[Capability],
        requested: Option<&[Capability]>,
    ) -> Result<Self> {
        if let Some(requested) = requested
            && let Some(extra) = requested
                .iter()
                .find(|r| !declared.iter().any(|d| d.covers(r)))
        {
            return Err(Error::NotAllowed(format!(
                "{tool} does not declare capability {extra}; a request can only narrow the entry's capabilities"
            )));
        }
        let in_force = requested.unwrap_or(declared);
        let mut grant = Grant {
            read: Vec::new(),
            write: Vec::new(),
            env: Vec::new(),
        };
        for cap in in_force {
            match cap {
                Capability::FsRead(p) => grant.read.push(compile_checked(p)?),
                Capability::FsWrite(p) => grant.write.push(compile_checked(p)?),
                Capability::Env(p) => grant.env.push(compile_checked(p)?),
                Capability::Network(_) | Capability::Exec(_) => {
                    return Err(Error::NotAllowed(format!(
                        "capability {cap} of {tool} is not supported by this runtime yet"
                    )));
                }
            }
        }
        Ok(grant)
    }

    /// Checks that a mount at `guest_path` with `access` is allowed.
    pub fn check_mount(&self, tool: &str, guest_path: &str, access: Access) -> Result<()> {
        let writable = self.write.iter().any(|m| m.is_match(guest_path));
        let allowed = match access {
            Access::ReadWrite => writable,
            Access::ReadOnly => writable || self.read.iter().any(|m| m.is_match(guest_path)),
        };
        if allowed {
            return Ok(());
        }
        let needed = match access {
            Access::ReadWrite => "fs:write",
            Access::ReadOnly => "fs:read",
        };
        Err(Error::NotAllowed(format!(
            "{tool} has no {needed} capability matching mount point {guest_path}"
        )))
    }

    /// Checks that an environment variable named `name` may be passed in.
    pub fn check_env(&self, tool: &str, name: &str) -> Result<()> {
        if self.env.iter().any(|m| m.is_match(name)) {
            Ok(())
        } else {
            Err(Error::NotAllowed(format!(
                "{tool} has no env capability matching variable {name}"
            )))
        }
    }
}

fn has_glob_metachar(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', ']', '{', '}'])
}

fn compile(pattern: &str) -> std::result::Result<GlobMatcher, globset::Error> {
    let glob: Glob = GlobBuilder::new(pattern).literal_separator(true).build()?;
    Ok(glob.compile_matcher())
}

fn compile_checked(pattern: &str) -> Result<GlobMatcher> {
    compile(pattern).map_err(|e| Error::BadRequest(format!("capability pattern {pattern:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<Capability> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        let cap: Capability = "fs:read:/data/**".parse().unwrap();
        assert_eq!(cap.to_string(), "fs:read:/data/**");
        assert!(
            "disk:all"
                .parse::<Capability>()
                .unwrap_err()
                .contains("unknown capability")
        );
        assert!(
            "env:"
                .parse::<Capability>()
                .unwrap_err()
                .contains("empty pattern")
        );
    }

    #[test]
    fn mounts_follow_globs_and_access() {
        let grant = Grant::new("t", &caps(&["fs:read:/data/**", "fs:write:/out"]), None).unwrap();
        grant
            .check_mount("t", "/data/x/y", Access::ReadOnly)
            .unwrap();
        grant.check_mount("t", "/out", Access::ReadWrite).unwrap();
        grant.check_mount("t", "/out", Access::ReadOnly).unwrap();
        let err = grant
            .check_mount("t", "/data/x", Access::ReadWrite)
            .unwrap_err();
        assert!(err.to_string().contains("fs:write"), "{err}");
        assert!(grant.check_mount("t", "/etc", Access::ReadOnly).is_err());
    }

    #[test]
    fn star_does_not_cross_directories() {
        let grant = Grant::new("t", &caps(&["fs:read:/data/*"]), None).unwrap();
        grant.check_mount("t", "/data/a", Access::ReadOnly).unwrap();
        assert!(
            grant
                .check_mount("t", "/data/a/b", Access::ReadOnly)
                .is_err()
        );
    }

    #[test]
    fn requests_can_only_narrow() {
        let declared = caps(&["fs:read:/**", "env:LC_*"]);
        let narrowed = caps(&["fs:read:/data/**"]);
        assert!(
            Grant::new("t", &declared, Some(&narrowed)).is_err(),
            "a different glob is not a narrowing"
        );
        let literal = caps(&["fs:read:/data", "env:LC_ALL"]);
        let grant = Grant::new("t", &declared, Some(&literal)).unwrap();
        grant.check_env("t", "LC_ALL").unwrap();
        assert!(grant.check_env("t", "LC_CTYPE").is_err());
        let wider = caps(&["fs:write:/data"]);
        let err = Grant::new("t", &declared, Some(&wider)).err().unwrap();
        assert!(
            err.to_string()
                .contains("does not declare capability fs:write:/data"),
            "{err}"
        );
    }

    #[test]
    fn network_and_exec_are_refused_when_in_force() {
        let err = Grant::new("t", &caps(&["network:*"]), None).err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::NotAllowed);
        assert!(err.to_string().contains("network:*"));
    }
}
