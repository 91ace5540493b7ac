//! Where an image's files are read from: an OCI image layout directory, or a tarball of one
//! (an OCI layout, or `docker save`'s format). Members are named by their path inside the
//! layout (`index.json`, `blobs/sha256/<hex>`, `manifest.json`, `<id>/layer.tar`).
//!
//! A tarball is indexed once, by seeking over its members, and a member is then read in
//! place: nothing is copied out of it first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use megavisor_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// Largest JSON document of an image (index, manifest, config) read into memory.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// An image's files.
#[derive(Debug)]
pub enum ImageSource {
    /// An image layout directory.
    Directory(PathBuf),
    /// An image tarball, with the offset and size of each of its regular members.
    Tarball {
        /// The tarball.
        path: PathBuf,
        /// Member name (normalized) -> (offset of its data, size).
        members: HashMap<String, (u64, u64)>,
    },
}

impl ImageSource {
    /// Opens `path`: a directory is an image layout, a file an image tarball.
    pub fn open(path: &Path) -> Result<Self> {
        let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, "open image", e))?;
        if metadata.is_dir() {
            return Ok(ImageSource::Directory(path.to_owned()));
        }
        let file = File::open(path).map_err(|e| Error::io(path, "open image", e))?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| Error::io(path, "read image tarball", e))?;
        // `docker save` stores a layer that two images share once, and links the other to
        // it: the links are resolved against the members once all are indexed.
        let mut links = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(path, "read image tarball", e))?;
            if entry.header().entry_type() == tar::EntryType::Symlink
                && let (Some(name), Ok(Some(target))) = (
                    entry.path().ok().and_then(|name| member_name(&name)),
                    entry.link_name(),
                )
            {
                let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                if let Some(target) = crate::unpack::normalize(&dir.join(target)) {
                    links.push((name, target.to_string_lossy().into_owned()));
                }
                continue;
            }
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry
                .path()
                .ok()
                .and_then(|name| member_name(&name))
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "image tarball {} has a member with an unusable name: {}",
                        path.display(),
                        String::from_utf8_lossy(&entry.path_bytes())
                    ))
                })?;
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        for (name, target) in links {
            if let Some(&found) = members.get(&target) {
                members.insert(name, found);
            }
        }
        Ok(ImageSource::Tarball {
            path: path.to_owned(),
            members,
        })
    }

    /// The image's path, for messages.
    pub fn path(&self) -> &Path {
        match self {
            ImageSource::Directory(path) | ImageSource::Tarball { path, .. } => path,
        }
    }

    /// A member's path, for messages: `DIR/NAME`, or `TARBALL:NAME`.
    pub fn member_path(&self, name: &str) -> PathBuf {
        match self {
            ImageSource::Directory(dir) => dir.join(name),
            ImageSource::Tarball { path, .. } => format!("{}:{name}", path.display()).into(),
        }
    }

    /// Whether the member exists.
    pub fn has(&self, name: &str) -> bool {
        match self {
            ImageSource::Directory(dir) => dir.join(name).is_file(),
            ImageSource::Tarball { members, .. } => members.contains_key(name),
        }
    }

    /// Opens a member for reading, and says how large it is.
    pub fn open_member(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        let missing = || {
            Error::BadRequest(format!(
                "image {} has no {name}: it is not an OCI image layout or image tarball, or it \
                 is incomplete",
                self.path().display()
            ))
        };
        let safe = member_name(Path::new(name)).ok_or_else(missing)?;
        match self {
            ImageSource::Directory(dir) => {
                let path = dir.join(&safe);
                // Beneath the layout and never through a symlink, and only a regular file:
                // a member that is a FIFO or a link to /dev/zero would hang the reader.
                let how = OpenHow::new()
                    .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
                let layout = nix::fcntl::open(
                    dir.as_path(),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io(dir, "open image", e.into()))?;
                let fd = match openat2(&layout, Path::new(&safe), how) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => return Err(missing()),
                    Err(e) => return Err(Error::io(&path, "open", e.into())),
                };
                let file = File::from(fd);
                let metadata = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
                if !metadata.is_file() {
                    return Err(Error::BadRequest(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                Ok((Box::new(file), metadata.len()))
            }
            ImageSource::Tarball { path, members } => {
                let &(offset, size) = members.get(&safe).ok_or_else(missing)?;
                let mut file = File::open(path).map_err(|e| Error::io(path, "open image", e))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io(path, "seek in image tarball", e))?;
                Ok((Box::new(file.take(size)), size))
            }
        }
    }

    /// Reads a small member (a JSON document) whole.
    pub fn read_member(&self, name: &str) -> Result<Vec<u8>> {
        let (reader, size) = self.open_member(name)?;
        if size > MAX_JSON_BYTES {
            return Err(Error::BadRequest(format!(
                "{name} of image {} is {size} bytes, over the limit of {MAX_JSON_BYTES}",
                self.path().display()
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(self.member_path(name), "read", e))?;
        Ok(bytes)
    }
}

/// `name` as a relative path with no `.`, `..` or root: the form members are looked up by.
fn member_name(name: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_normalized_and_never_leave_the_image() {
        assert_eq!(
            member_name(Path::new("./blobs/sha256/ab")).as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            member_name(Path::new("index.json")).as_deref(),
            Some("index.json")
        );
        assert_eq!(member_name(Path::new("../etc/passwd")), None);
        assert_eq!(member_name(Path::new("/etc/passwd")), None);
        assert_eq!(member_name(Path::new("./")), None);
    }
}
