"""The shim, containerd-shim-megavisor-v1, under a real containerd (Debian's package) that
the tests start with a config, root, state and socket of their own: images recompiled by
`megavisor recompile`, imported with `ctr images import`, run with `ctr run --runtime
io.containerd.megavisor.v1`, and run as Kubernetes runs them, through containerd's CRI
plugin with a `megavisor` runtime handler and `crictl`."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from daemon import RUNTIME, Containerd, why_containerd_cannot_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
MEGAVISOR = Path(os.environ.get("MEGAVISOR", RELEASE / "megavisor"))
SHIM = MEGAVISOR.with_name("containerd-shim-megavisor-v1")
BUILD_IMAGE = ROOT / "tests" / "image" / "build_image.py"
KEY = BUILD / "keys" / "megavisor"
CRICTL = shutil.which("crictl") or str(Path(os.environ.get("GOBIN", "")) / "crictl")

TOOLS_IMAGE = "docker.io/library/megavisor-tools:1"
TOOLS_LAYERS = [[
    {"path": "bin/wc", "copy": "/usr/bin/wc"},
    {"path": "bin/id", "copy": "/usr/bin/id"},
    {"path": "bin/count", "symlink": "wc"},
    {"path": "usr/bin/python3", "text": "#!/bin/false\n", "mode": 0o755},
    {"path": "etc/motd", "text": "one\ntwo\nthree\n"},
]]
# A pod's sandbox image: the shim runs nothing for a sandbox, but the CRI wants an image
# with an entrypoint.
PAUSE_IMAGE = "docker.io/library/megavisor-pause:1"
# The python path is a stand-in file the operator's map names: what runs is the entry.
OPERATOR_MAP = '[paths]\n"/usr/bin/python3" = { entry = "python" }\n'


@pytest.fixture(scope="module")
def containerd():
    reason = why_containerd_cannot_run(SHIM)
    if reason:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="megavisor-containerd-"))
    daemon = Containerd(work, SHIM, BUILD / "bundle", Path(str(KEY) + ".pub"), PAUSE_IMAGE)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


def recompile(work: Path, layers, name, *extra):
    image = work / "image.tar"
    args = [sys.executable, str(BUILD_IMAGE), "--format", "docker", "--name", name,
            "--out", str(image)]
    for layer in layers:
        args += ["--layer", json.dumps(layer)]
    subprocess.run(args, check=True)
    result = subprocess.run(
        [str(MEGAVISOR), "recompile", str(image), "--out", str(work / "out"),
         "--key", str(KEY), "--bundle", str(BUILD / "bundle"),
         "--trusted-key", str(KEY) + ".pub", *extra],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    return work / "out" / "image.tar"


@pytest.fixture(scope="module")
def tools_image(containerd, tmp_path_factory):
    """The tools image, recompiled and imported into both namespaces."""
    work = tmp_path_factory.mktemp("tools")
    mapfile = work / "map.toml"
    mapfile.write_text(OPERATOR_MAP)
    tarball = recompile(work, TOOLS_LAYERS, TOOLS_IMAGE, "--map", str(mapfile))
    pause = work / "pause.tar"
    subprocess.run([sys.executable, str(BUILD_IMAGE), "--format", "docker", "--name",
                    PAUSE_IMAGE.removeprefix("docker.io/library/"), "--out", str(pause),
                    "--cmd", '["/pause"]', "--layer", '[{"path": "pause", "text": ""}]'],
                   check=True)
    for namespace, image in [("default", tarball), ("k8s.io", tarball), ("k8s.io", pause)]:
        imported = containerd.ctr("images", "import", "--snapshotter", "native",
                                  str(image), namespace=namespace)
        assert imported.returncode == 0, imported.stderr
    return TOOLS_IMAGE


def test_ctr_runs_a_mapped_tool_and_passes_its_exit_status(containerd, tools_image):
    result = containerd.run(tools_image, "mapped", "/bin/wc", "-l", "/etc/motd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3 /etc/motd\n"
    via_path = containerd.run(tools_image, "on-path", "count", "-w", "/etc/motd")
    assert via_path.returncode == 0, via_path.stderr
    assert via_path.stdout.split() == ["3", "/etc/motd"], "args[0] found on the image's PATH"
    failing = containerd.run(tools_image, "failing", "/bin/wc", "/etc/no-such-file")
    assert failing.returncode == 1 and "no-such-file" in failing.stderr


def test_an_unmapped_binary_fails_with_eacces_and_126(containerd, tools_image):
    result = containerd.run(tools_image, "unmapped", "/bin/id")
    assert result.returncode == 126
    assert "EACCES: /bin/id (sha256 " in result.stderr
    assert "is not in the image map" in result.stderr
    missing = containerd.run(tools_image, "missing", "/bin/ls")
    assert missing.returncode == 127 and "not in the image" in missing.stderr


def test_an_image_that_was_not_recompiled_is_refused(containerd, tmp_path):
    image = tmp_path / "plain.tar"
    subprocess.run([sys.executable, str(BUILD_IMAGE), "--format", "docker", "--name",
                    "megavisor-plain:1", "--out", str(image), "--layer",
                    json.dumps(TOOLS_LAYERS[0])], check=True)
    assert containerd.ctr("images", "import", "--snapshotter", "native",
                          str(image)).returncode == 0
    result = containerd.run("docker.io/library/megavisor-plain:1", "plain", "/bin/wc")
    assert result.returncode == 126 and "has no image map" in result.stderr


def test_a_native_binary_runs_in_the_sandbox_behind_the_exec_gate(containerd, tmp_path):
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        print("SKIPPED: no static busybox (make containerd-test installs it)")
        pytest.skip("no static busybox")
    import hashlib
    layers = [[
        {"path": "bin/busybox", "copy": str(busybox)},
        {"path": "bin/sh", "symlink": "busybox"},
        {"path": "usr/bin/id", "copy": "/usr/bin/id"},
    ]]
    digest = hashlib.sha256(busybox.read_bytes()).hexdigest()
    name = "docker.io/library/megavisor-native:1"
    tarball = recompile(tmp_path, layers, name, "--allow-digest", digest)
    assert containerd.ctr("images", "import", "--snapshotter", "native",
                          str(tarball)).returncode == 0
    result = containerd.run(name, "native", "/bin/sh", "-c", "echo from busybox; /usr/bin/id")
    assert result.stdout == "from busybox\n", result.stderr
    assert "/usr/bin/id: Permission denied" in result.stderr
    assert result.returncode == 126
    # The fleet's allowlist, named in the shim's config, takes the digest back.
    fleet = tmp_path / "allowlist"
    fleet.write_text("# busybox revoked\n")
    config = tmp_path / "shim.toml"
    config.write_text(f'bundle = "{BUILD / "bundle"}"\ntrusted_keys = ["{KEY}.pub"]\n'
                      f'allowlist = "{fleet}"\n')
    revoked = containerd.run(name, "revoked", "/bin/sh", "-c", "echo no",
                             extra=["--runtime-config-path", str(config)])
    assert revoked.returncode == 126 and revoked.stdout == ""
    assert "the fleet's allowlist does not list it" in revoked.stderr


def test_output_past_the_limit_is_cut_and_says_so(containerd, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (17 << 20))
    layers = [[{"path": "bin/cat", "copy": "/usr/bin/cat"},
               {"path": "big", "copy": str(big), "mode": 0o644}]]
    name = "docker.io/library/megavisor-big:1"
    tarball = recompile(tmp_path, layers, name)
    assert containerd.ctr("images", "import", "--snapshotter", "native",
                          str(tarball)).returncode == 0
    result = containerd.run(name, "big", "/bin/cat", "/big")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 16 << 20, "the default output limit"
    assert f"stdout truncated: kept {16 << 20} of {17 << 20} bytes" in result.stderr


def test_kill_stops_a_running_tool(containerd, tools_image):
    name = "killed"
    running = subprocess.Popen(
        ["ctr", "-a", str(containerd.socket), "run", "--rm", "--snapshotter", "native",
         "--runtime", RUNTIME, tools_image, name, "/usr/bin/python3", "-c",
         "while True: pass"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while "RUNNING" not in containerd.ctr("task", "ls").stdout:
        assert time.monotonic() < deadline, "the task never ran"
        assert running.poll() is None, running.communicate()
        time.sleep(0.1)
    killed = containerd.ctr("task", "kill", "-s", "SIGKILL", name)
    assert killed.returncode == 0, killed.stderr
    assert running.wait(timeout=20) == 137


def test_the_containers_of_a_pod_share_one_shim_and_the_cri_path_works(
    containerd, tools_image, tmp_path
):
    if not Path(CRICTL).is_file():
        print(f"SKIPPED: crictl is not installed at {CRICTL} (make containerd-test installs it)")
        pytest.skip("crictl is not installed")
    endpoint = f"unix://{containerd.socket}"

    def crictl(*args):
        result = subprocess.run([CRICTL, "--runtime-endpoint", endpoint, *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"crictl {args}: {result.stderr}"
        return result.stdout.strip()

    logs = tmp_path / "logs"
    logs.mkdir()
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({
        "metadata": {"name": "tools", "namespace": "default", "uid": "megavisor-test-pod"},
        "log_directory": str(logs),
        "linux": {"security_context": {"namespace_options": {"network": 2}}},
    }))
    pod_id = crictl("runp", "--runtime", "megavisor", str(pod))

    def container(name, command):
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({
            "metadata": {"name": name},
            "image": {"image": tools_image},
            "command": command,
            "log_path": f"{name}.log",
        }))
        container_id = crictl("create", pod_id, str(config), str(pod))
        crictl("start", container_id)
        return container_id

    counted = container("count", ["/bin/wc", "-l", "/etc/motd"])
    denied = container("denied", ["/bin/id"])

    def exit_code(container_id):
        deadline = time.monotonic() + 30
        while True:
            status = json.loads(crictl("inspect", container_id))["status"]
            if status["state"] == "CONTAINER_EXITED":
                return status["exitCode"]
            assert time.monotonic() < deadline, status
            time.sleep(0.2)

    assert exit_code(counted) == 0
    assert exit_code(denied) == 126
    assert "3 /etc/motd" in (logs / "count.log").read_text()
    assert "EACCES: /bin/id" in (logs / "denied.log").read_text()
    serving_pod = [pid for pid in containerd.shims()
                   if pod_id in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(serving_pod) == 1, "one shim serves the pod's sandbox and both containers"
    crictl("stopp", pod_id)
    crictl("rmp", pod_id)


def test_a_configured_supervisor_takes_the_calls(containerd, tools_image, tmp_path):
    socket = tmp_path / "megavisor.sock"
    supervisor = subprocess.Popen(
        [str(MEGAVISOR), "serve", "--socket", str(socket), "--bundle", str(BUILD / "bundle"),
         "--trusted-key", str(KEY) + ".pub", "--mount-root",
         f"{containerd.work}/state/io.containerd.runtime.v2.task:ro"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert supervisor.poll() is None, supervisor.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        config = tmp_path / "shim.toml"
        # No bundle an embedded shim could load: only the supervisor can answer.
        config.write_text(f'socket = "{socket}"\nbundle = "/nonexistent"\n'
                          f'trusted_keys = ["{KEY}.pub"]\n')
        extra = ["--runtime-config-path", str(config)]
        result = containerd.run(tools_image, "connected", "/bin/wc", "-l", "/etc/motd",
                                extra=extra)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "3 /etc/motd\n"
        denied = containerd.run(tools_image, "connected-denied", "/bin/id", extra=extra)
        assert denied.returncode == 126 and "EACCES: /bin/id" in denied.stderr
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=20)
    gone = containerd.run(tools_image, "no-supervisor", "/bin/wc", "/etc/motd",
                          extra=["--runtime-config-path", str(config)])
    assert gone.returncode != 0
    assert "cannot reach the supervisor" in gone.stderr


def test_the_deploy_snippet_is_a_containerd_config(tmp_path):
    """deploy/kubernetes/containerd-config.toml, imported by a node's config, gives
    containerd the `megavisor` runtime handler."""
    if shutil.which("containerd") is None:
        print("SKIPPED: containerd is not installed (make containerd-test installs it)")
        pytest.skip("containerd is not installed")
    snippet = ROOT / "deploy" / "kubernetes" / "containerd-config.toml"
    config = tmp_path / "config.toml"
    config.write_text(f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
                      f'imports = ["{snippet}"]\n')
    dump = subprocess.run(["containerd", "--config", str(config), "config", "dump"],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    section = dump.stdout.split('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.megavisor]')
    assert len(section) == 2, "the runtime handler is not in the merged config"
    assert f'runtime_type = "{RUNTIME}"' in section[1].split("[plugins")[0]
    assert 'ConfigPath = "/etc/megavisor/shim.toml"' in section[1]
