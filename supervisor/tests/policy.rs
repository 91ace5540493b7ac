//! The policy document as an operator uses it: a file, flags over single keys, `policy
//! show`, refusals that name the file and the key, and SIGHUP.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Supervisor, bundle, wait_until};
use megavisor_client::{Call, ErrorKind};
use nix::sys::signal::Signal;

fn megavisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_megavisor"))
        .args(args)
        .env_remove("MEGAVISOR_POLICY")
        .env_remove("MEGAVISOR_ALLOWLIST")
        .output()
        .expect("megavisor starts")
}

fn show(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["policy", "show", "--json"];
    all.extend(args);
    let out = megavisor(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("policy show --json prints JSON")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_policy_file_with_one_key_overridden_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "policy.toml",
        "[limits]\nmax_timeout = \"90s\"\nmax_concurrency = 3\n\n[cgroups]\npids = 64\n\n[native]\nbinaries = [\"/usr/bin/wc\"]\n",
    );
    let shown = show(&[
        "--policy",
        &file,
        "--pids",
        "32",
        "--allow-binary",
        "/bin/cat",
    ]);
    // The file's keys, the flag over one of them, and every default filled in.
    assert_eq!(shown["limits"]["max_timeout"], "90s");
    assert_eq!(shown["limits"]["max_concurrency"], 3);
    assert_eq!(shown["cgroups"]["pids"], 32);
    assert_eq!(
        shown["native"]["binaries"],
        serde_json::json!(["/usr/bin/wc", "/bin/cat"])
    );
    assert_eq!(shown["limits"]["max_output"], "16M");
    assert_eq!(shown["native"]["default_timeout"], "30s");
    assert_eq!(shown["sandbox"]["uid"], 65534);
    assert_eq!(shown["cgroups"]["version"], "auto");
    assert!(
        shown["sandbox"]["jailer"]
            .as_str()
            .unwrap()
            .ends_with("megavisor-jail")
    );

    // The defaults alone, and TOML that reads back as what it shows.
    let defaults = show(&[]);
    assert_eq!(defaults["cgroups"]["pids"], 256);
    let toml = megavisor(&["policy", "show", "--policy", &file]);
    assert!(toml.status.success());
    let again = write(
        dir.path(),
        "again.toml",
        &String::from_utf8(toml.stdout).unwrap(),
    );
    let mut reread = show(&["--policy", &again]);
    let mut first = show(&["--policy", &file]);
    reread["sandbox"]["jailer"] = serde_json::Value::Null;
    first["sandbox"]["jailer"] = serde_json::Value::Null;
    assert_eq!(reread, first);
}

#[test]
fn a_malformed_policy_is_refused_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, expected) in [
        (
            "[limits]\nmax_timeout = 5\n",
            "limits.max_timeout",
            "a duration",
        ),
        (
            "[limits]\nmax_concurency = 2\n",
            "limits",
            "unknown field `max_concurency`",
        ),
        (
            "[native]\nbinaries = [\"wc\"]\n",
            "native.binaries",
            "an absolute path",
        ),
        ("[cgroups]\nversion = \"v3\"\n", "cgroups.version", "v3"),
        (
            "[peers]\nmount_roots = [\"data\"]\n",
            "peers.mount_roots",
            "absolute",
        ),
    ] {
        let file = write(dir.path(), "bad.toml", text);
        let out = megavisor(&["policy", "show", "--policy", &file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("policy {file}")),
            "{text}: {stderr}"
        );
        assert!(stderr.contains(&format!("key `{key}")), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        // The same file keeps a supervisor and a one-shot run from starting.
        let run = megavisor(&["run", "--policy", &file, "echo", "hi"]);
        assert_eq!(run.status.code(), Some(2), "{text}");
        assert!(String::from_utf8_lossy(&run.stderr).contains(key), "{text}");
    }
    // Seccomp filters that lack a set's filter are refused before anything runs under them.
    let filters = write(dir.path(), "filters.json", "{}");
    let file = write(
        dir.path(),
        "seccomp.toml",
        &format!("[seccomp]\nfilters = \"{filters}\"\n"),
    );
    let out = megavisor(&["policy", "show", "--policy", &file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key `seccomp.filters`"), "{stderr}");
    assert!(
        stderr.contains("no filter named \"administration\""),
        "{stderr}"
    );
    let missing = megavisor(&["policy", "show", "--policy", "/nonexistent/policy.toml"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("policy /nonexistent/policy.toml: cannot read it")
    );
}

#[test]
fn a_narrower_allowlist_takes_effect_on_sighup_and_a_broken_policy_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let both = "[native]\nbinaries = [\"/usr/bin/wc\", \"/usr/bin/head\"]\n";
    let file = write(dir.path(), "policy.toml", both);
    let supervisor = Supervisor::start(&bundle(), &["--policy", &file]);
    let client = supervisor.client();
    let wc = || client.call(&Call::native("/usr/bin/wc").args(["-c"]).stdin(*b"four"));
    let head = || {
        client.call(
            &Call::native("/usr/bin/head")
                .args(["-c", "2"])
                .stdin(*b"four"),
        )
    };
    assert_eq!(wc().unwrap().stdout, b"4\n");
    assert_eq!(head().unwrap().stdout, b"fo");

    let replace_policy = |text: &str| {
        write(dir.path(), "policy.toml", text);
        supervisor.signal(Signal::SIGHUP);
    };
    // Narrowed to wc: head is refused once the new policy is in force.
    replace_policy("[native]\nbinaries = [\"/usr/bin/wc\"]\n");
    wait_until("head refused", Duration::from_secs(20), || {
        head().is_err_and(|e| e.kind() == ErrorKind::NotAllowed)
    });
    assert_eq!(wc().unwrap().stdout, b"4\n");

    // A broken policy is refused and the narrowed one keeps serving.
    replace_policy("[native]\nbinaries = \"/usr/bin/head\"\n");
    wait_until("the failed reload", Duration::from_secs(20), || {
        supervisor.log().contains("reload failed")
    });
    let log = supervisor.log();
    assert!(
        log.contains(&format!("policy {file}: key `native.binaries`")),
        "{log}"
    );
    assert_eq!(wc().unwrap().stdout, b"4\n");
    assert_eq!(head().unwrap_err().kind(), ErrorKind::NotAllowed);
}

#[test]
fn the_peers_of_a_policy_file_decide_who_may_connect() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "peers.toml", "[peers]\nallow_uids = [4242]\n");
    let supervisor = Supervisor::start(&bundle(), &["--policy", &file]);
    let err = megavisor_client::Client::connect(&supervisor.socket)
        .err()
        .expect("this uid is not the policy's");
    assert_eq!(err.kind(), ErrorKind::NotAllowed, "{err}");
    let own = nix::unistd::geteuid().as_raw();
    assert!(err.to_string().contains(&format!("uid {own}")), "{err}");
}
