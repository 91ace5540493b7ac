//! The same calls through both modes give the same results and the same errors: an
//! embedded engine, and a real `megavisor serve` reached over its ring.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use megavisor_driver::{Call, Driver, EmbeddedOptions, ErrorKind};

fn build_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build");
    assert!(
        dir.join("test-bundle/manifest.json").exists(),
        "run `make setup` first"
    );
    dir
}

fn key() -> PathBuf {
    build_dir().join("keys/megavisor.pub")
}

/// `megavisor serve` from the same target directory as this test (built by `make setup`).
struct Served {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Served {
    fn start(bundle: &Path) -> Self {
        let exe = std::env::current_exe().unwrap();
        let megavisor = exe.parent().unwrap().parent().unwrap().join("megavisor");
        assert!(
            megavisor.exists(),
            "{} missing: run `make setup`",
            megavisor.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mv.sock");
        let mut child = Command::new(megavisor)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--bundle")
            .arg(bundle)
            .arg("--trusted-key")
            .arg(key())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert!(ready.starts_with("megavisor ready"), "{ready:?}");
        Served {
            child,
            _dir: dir,
            socket,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn both(bundle: &str) -> (Driver, Driver, Served) {
    let bundle = build_dir().join(bundle);
    let embedded = Driver::embedded(&EmbeddedOptions::new(&bundle, key())).unwrap();
    let served = Served::start(&bundle);
    let connected = Driver::connect(Some(&served.socket)).unwrap();
    (embedded, connected, served)
}

#[test]
fn outputs_are_the_same_in_both_modes() {
    let (embedded, connected, _served) = both("bundle");
    let calls = [
        Call::new("echo").args(["same", "answer"]),
        Call::new("wc").args(["-l"]).stdin(b"a\nb\nc\n".as_slice()),
        Call::new("wc").params_json(r#"{"lines": true, "stdin": "x\ny\n"}"#),
        Call::new("grep").args(["zzz"]).stdin(b"abc\n".as_slice()),
    ];
    for call in &calls {
        let a = embedded.run(call).unwrap();
        let b = connected.run(call).unwrap();
        assert_eq!(
            (a.exit_code, &a.stdout, &a.stderr),
            (b.exit_code, &b.stdout, &b.stderr)
        );
    }
    let names = |driver: &Driver| -> Vec<String> {
        driver
            .tools()
            .unwrap()
            .tools
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    assert_eq!(names(&embedded), names(&connected));
}

#[test]
fn errors_have_the_same_kinds_in_both_modes() {
    let (embedded, connected, _served) = both("test-bundle");
    let cases = [
        (Call::new("nope"), ErrorKind::ToolNotFound),
        (
            Call::new("spin").timeout(Duration::from_millis(50)),
            ErrorKind::Timeout,
        ),
        (
            Call::new("alloc").memory_bytes(4 << 20),
            ErrorKind::MemoryLimit,
        ),
        (Call::new("trap"), ErrorKind::Trap),
        (Call::new("true").env("SECRET", "x"), ErrorKind::NotAllowed),
        (
            Call::new("true").args(["a"]).params_json("{}"),
            ErrorKind::BadRequest,
        ),
    ];
    for (call, kind) in &cases {
        let a = embedded.run(call).unwrap_err();
        let b = connected.run(call).unwrap_err();
        assert_eq!((a.kind(), b.kind()), (*kind, *kind), "{a} / {b}");
    }
}

#[test]
fn a_tampered_bundle_is_refused_embedded() {
    let copy = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(build_dir().join("bundle")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), copy.path().join(file.file_name())).unwrap();
    }
    let wasm = std::fs::read_dir(copy.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wasm"))
        .unwrap();
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&wasm, bytes).unwrap();
    let err = Driver::embedded(&EmbeddedOptions::new(copy.path(), key()))
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::HashMismatch, "{err}");
}

#[test]
fn connecting_where_no_supervisor_listens_is_connection_lost() {
    let err = Driver::connect(Some(Path::new("/nonexistent/megavisor.sock")))
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost);
}

#[test]
fn a_driver_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Driver>();
    let (embedded, connected, _served) = both("bundle");
    std::thread::scope(|scope| {
        for driver in [&embedded, &connected] {
            for n in 0..4 {
                scope.spawn(move || {
                    let out = driver
                        .run(&Call::new("echo").args([n.to_string()]))
                        .unwrap();
                    assert_eq!(out.stdout, format!("{n}\n").into_bytes());
                });
            }
        }
    });
}
