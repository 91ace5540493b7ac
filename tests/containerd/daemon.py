"""A private containerd (Debian's package) for the tests and the benchmarks: its own
config, root, state and socket under a directory, megavisor's shim on its PATH, the
`megavisor` runtime handler in its CRI plugin."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

RUNTIME = "io.containerd.megavisor.v1"


def why_containerd_cannot_run(shim: Path):
    """Why this machine cannot run the private containerd, or None."""
    if os.geteuid() != 0:
        return "containerd needs root"
    for tool in ["containerd", "ctr"]:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make containerd-test installs it)"
    if not shim.exists():
        return f"{shim} was not built"
    return None


class Containerd:
    """containerd under `work`, with `shim` on its PATH and `bundle` and `trusted_key` in
    its environment (what an embedded shim loads)."""

    def __init__(self, work: Path, shim: Path, bundle: Path, trusted_key: Path,
                 sandbox_image: str):
        self.work = work
        self.shim = shim
        self.socket = work / "containerd.sock"
        bin_dir = work / "bin"
        bin_dir.mkdir()
        (bin_dir / shim.name).symlink_to(shim)
        (work / "config.toml").write_text(f"""
version = 2
root = "{work}/root"
state = "{work}/state"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.megavisor]
      runtime_type = "{RUNTIME}"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{work}/cni/bin"
  conf_dir = "{work}/cni/conf"
""")
        env = dict(os.environ)
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        env["MEGAVISOR_BUNDLE"] = str(bundle)
        env["MEGAVISOR_TRUSTED_KEY"] = str(trusted_key)
        env.pop("MEGAVISOR_SHIM_CONFIG", None)
        self.log = open(work / "containerd.log", "w")
        self.process = subprocess.Popen(
            ["containerd", "--config", str(work / "config.toml")],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            assert self.process.poll() is None, (work / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not come up in 30 s"
            time.sleep(0.2)

    def ctr(self, *args, namespace="default", timeout=60, **kwargs):
        return subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", namespace, *args],
            capture_output=True, text=True, timeout=timeout, **kwargs,
        )

    def run(self, image, name, *command, runtime=RUNTIME, extra=(), timeout=60):
        """`ctr run --rm` of `command` in `image` under `runtime`."""
        return self.ctr(
            "run", "--rm", "--snapshotter", "native", "--runtime", runtime, *extra,
            image, name, *command, timeout=timeout,
        )

    def shims(self):
        """The shims serving this containerd, by pid."""
        found = subprocess.run(["pgrep", "-f", f"{self.shim.name}.*{self.socket}"],
                               capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for pid in self.shims():
            os.kill(pid, signal.SIGKILL)
        self.log.close()
