//! Applying hostile and ordinary layers: every entry lands inside the root or is refused,
//! naming the entry; whiteouts and opaque directories hide what the layers below put there.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use megavisor_image::unpack::{UnpackLimits, Unpacker};

/// One tar entry of a test layer.
enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Special(&'a str, tar::EntryType),
}

fn layer(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        let (path, data): (&str, &[u8]) = match *item {
            Item::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(mode);
                header.set_size(data.len() as u64);
                (path, data)
            }
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                (path, &[])
            }
            Item::Symlink(path, target) | Item::HardLink(path, target) => {
                let kind = if matches!(item, Item::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                header.set_link_name(target).unwrap();
                (path, &[])
            }
            Item::Special(path, kind) => {
                header.set_entry_type(kind);
                header.set_mode(0o644);
                (path, &[])
            }
        };
        header.set_size(data.len() as u64);
        // `append_data` would refuse `..` itself; a hostile layer is written raw.
        let name = path.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn unpacker(root: &Path) -> Unpacker {
    Unpacker::new(root, UnpackLimits::default()).unwrap()
}

#[test]
fn whiteouts_and_opaque_directories_hide_the_layers_below() {
    let root = tempfile::tempdir().unwrap();
    let mut unpack = unpacker(root.path());
    let lower = layer(&[
        Item::Dir("etc/"),
        Item::File("etc/old", b"old", 0o644),
        Item::File("etc/kept", b"kept", 0o644),
        Item::Dir("opt/"),
        Item::File("opt/lower", b"lower", 0o644),
        Item::Dir("var/cache/"),
        Item::File("var/cache/a", b"a", 0o644),
    ]);
    unpack.apply_tar("lower", lower.as_slice()).unwrap();
    let upper = layer(&[
        Item::File("etc/.wh.old", b"", 0o644),
        Item::Dir("opt/"),
        Item::File("opt/upper", b"upper", 0o644),
        Item::File("opt/.wh..wh..opq", b"", 0o644),
        Item::File("var/.wh.cache", b"", 0o644),
    ]);
    unpack.apply_tar("upper", upper.as_slice()).unwrap();
    let at = |p: &str| root.path().join(p);
    assert!(!at("etc/old").exists(), "a whiteout removes the lower file");
    assert_eq!(std::fs::read(at("etc/kept")).unwrap(), b"kept");
    assert!(
        !at("opt/lower").exists(),
        "an opaque directory hides the lower layers"
    );
    assert_eq!(
        std::fs::read(at("opt/upper")).unwrap(),
        b"upper",
        "but keeps what its own layer put there, even before the marker"
    );
    assert!(
        !at("var/cache").exists(),
        "a whiteout of a directory removes the tree"
    );
    assert!(!at("etc/.wh.old").exists() && !at("opt/.wh..wh..opq").exists());
}

#[test]
fn an_entry_that_climbs_out_of_the_root_is_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().parent().unwrap().join("megavisor-escaped");
    let hostile = layer(&[Item::File("../megavisor-escaped", b"x", 0o644)]);
    let err = unpacker(root.path())
        .apply_tar("hostile", hostile.as_slice())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"../megavisor-escaped\" would land outside the root"),
        "{err}"
    );
    assert!(!outside.exists());
}

#[test]
fn symlinks_planted_by_a_layer_resolve_inside_the_root() {
    let root = tempfile::tempdir().unwrap();
    let host_dir = tempfile::tempdir().unwrap();
    let host = host_dir.path().to_str().unwrap().trim_start_matches('/');
    let absolute = format!("/{host}");
    let relative = format!("{}{host}", "../".repeat(12));
    let planted = layer(&[
        Item::Symlink("abs", &absolute),
        Item::Symlink("rel", &relative),
    ]);
    let mut unpack = unpacker(root.path());
    unpack.apply_tar("planted", planted.as_slice()).unwrap();
    let through = layer(&[
        Item::File("abs/by-absolute", b"1", 0o644),
        Item::File("rel/by-relative", b"2", 0o644),
    ]);
    unpack.apply_tar("through", through.as_slice()).unwrap();
    assert_eq!(
        std::fs::read_dir(host_dir.path()).unwrap().count(),
        0,
        "nothing was written through the symlinks to the host"
    );
    let inside = root.path().join(host);
    assert_eq!(std::fs::read(inside.join("by-absolute")).unwrap(), b"1");
    assert_eq!(std::fs::read(inside.join("by-relative")).unwrap(), b"2");
}

#[test]
fn hard_links_must_name_a_regular_file_in_the_root() {
    let root = tempfile::tempdir().unwrap();
    let mut unpack = unpacker(root.path());
    let ok = layer(&[
        Item::File("bin/busybox", b"\x7fELF", 0o755),
        Item::HardLink("bin/cat", "bin/busybox"),
    ]);
    unpack.apply_tar("ok", ok.as_slice()).unwrap();
    let cat = std::fs::metadata(root.path().join("bin/cat")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&cat), 2);
    let out = layer(&[Item::HardLink("passwd", "../../../../etc/passwd")]);
    let err = unpack
        .apply_tar("out", out.as_slice())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"passwd\" is a hard link to outside the root"),
        "{err}"
    );
    let missing = layer(&[Item::HardLink("shadow", "etc/shadow")]);
    let err = unpack
        .apply_tar("missing", missing.as_slice())
        .unwrap_err()
        .to_string();
    assert!(err.contains("which is not in the root"), "{err}");
}

#[test]
fn devices_fifos_and_oversized_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    for (kind, why) in [
        (tar::EntryType::Char, "is a device file"),
        (tar::EntryType::Block, "is a device file"),
        (tar::EntryType::Fifo, "is a FIFO"),
    ] {
        let special = layer(&[Item::Special("dev/thing", kind)]);
        let err = unpacker(root.path())
            .apply_tar("special", special.as_slice())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("\"dev/thing\" {why}")), "{err}");
    }
    let limits = UnpackLimits {
        max_file_bytes: 4,
        ..UnpackLimits::default()
    };
    let big = layer(&[Item::File("big", b"12345", 0o644)]);
    let err = Unpacker::new(root.path(), limits)
        .unwrap()
        .apply_tar("big", big.as_slice())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"big\" is 5 bytes, over the limit of 4"),
        "{err}"
    );
}

#[test]
fn setuid_bits_are_dropped_and_modes_kept() {
    let root = tempfile::tempdir().unwrap();
    let suid = layer(&[
        Item::File("bin/su", b"x", 0o4755),
        Item::File("etc/motd", b"hi", 0o640),
    ]);
    unpacker(root.path())
        .apply_tar("suid", suid.as_slice())
        .unwrap();
    let mode = |p: &str| {
        std::fs::metadata(root.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/su"), 0o755);
    assert_eq!(mode("etc/motd"), 0o640);
}
