#!/usr/bin/env python3
"""Container start to exit through containerd, one JSON line per case (bench/README.md):
`ctr run --rm` of `/bin/true` in one image under Debian's runc (`runc/ctr-run/true`, the
peer) and under megavisor's shim, through the node's supervisor (`shim/ctr-run/true`, the
fast path) and with the bundle loaded by the shim itself (`shim/embedded/ctr-run/true`).
The image is a static busybox; recompiled, its /bin/true runs the bundle's `true`.

    ctr_run.py --megavisor PATH --bundle DIR --key FILE [--quick]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "containerd"))
from daemon import Containerd, why_containerd_cannot_run  # noqa: E402

IMAGE = "docker.io/library/megavisor-bench-true:1"
CASES = ["runc/ctr-run/true", "shim/ctr-run/true", "shim/embedded/ctr-run/true"]


def skipped(reason):
    for case in CASES:
        print(json.dumps({"case": case, "skipped": reason}), flush=True)


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(containerd, case, runs, runtime, extra=()):
    samples = []
    for index in range(runs + 2):
        started = time.perf_counter()
        # A name of its own per run: a new shim for a name just used would wait for the
        # old one's socket to go.
        name = f"{case.replace('/', '-')}-{index}"
        result = containerd.run(IMAGE, name, "/bin/true", runtime=runtime,
                                extra=extra)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{case}: ctr run failed: {result.stderr}")
        if index >= 2:  # the first runs warm the image's snapshot and the page cache
            samples.append(elapsed * 1e6)
    return {
        "case": case,
        "p50_us": round(statistics.median(samples), 2),
        "p99_us": round(percentile(samples, 0.99), 2),
        "ops_per_s": round(len(samples) / (sum(samples) / 1e6), 2),
        "iterations": len(samples),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megavisor", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True, help="the secret signing key")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.megavisor = args.megavisor.resolve()
    shim = args.megavisor.with_name("containerd-shim-megavisor-v1")
    reason = why_containerd_cannot_run(shim)
    if reason is None and not Path("/bin/busybox").is_file():
        reason = "no static busybox (apt-get install busybox-static)"
    if reason:
        skipped(reason)
        return
    runs = 10 if args.quick else 50
    args.bundle, args.key = args.bundle.resolve(), args.key.resolve()
    trusted = Path(str(args.key) + ".pub")
    with tempfile.TemporaryDirectory(prefix="megavisor-bench-ctr-") as work:
        work = Path(work)
        image = work / "true.tar"
        subprocess.run([sys.executable, str(ROOT / "tests" / "image" / "build_image.py"),
                        "--format", "docker", "--name", IMAGE.removeprefix("docker.io/library/"),
                        "--out", str(image), "--layer", json.dumps([
                            {"path": "bin/busybox", "copy": "/bin/busybox"},
                            {"path": "bin/true", "symlink": "busybox"}])], check=True)
        (work / "map.toml").write_text('[paths]\n"/bin/true" = { entry = "true" }\n')
        subprocess.run([str(args.megavisor), "recompile", str(image), "--out",
                        str(work / "out"), "--key", str(args.key), "--map",
                        str(work / "map.toml"), "--bundle", str(args.bundle),
                        "--trusted-key", str(trusted)], check=True, capture_output=True)
        (work / "containerd").mkdir()
        containerd = Containerd(work / "containerd", shim, args.bundle, trusted, IMAGE)
        socket = work / "megavisor.sock"
        supervisor = subprocess.Popen(
            [str(args.megavisor), "serve", "--socket", str(socket), "--bundle",
             str(args.bundle), "--trusted-key", str(trusted), "--mount-root",
             f"{containerd.work}/state/io.containerd.runtime.v2.task:ro"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            imported = containerd.ctr("images", "import", "--snapshotter", "native",
                                      str(work / "out" / "image.tar"))
            if imported.returncode != 0:
                raise SystemExit(f"ctr images import: {imported.stderr}")
            while not socket.exists():
                time.sleep(0.05)
            config = work / "shim.toml"
            config.write_text(f'socket = "{socket}"\ntrusted_keys = ["{trusted}"]\n')
            peer = measure(containerd, "runc/ctr-run/true", runs, "io.containerd.runc.v2")
            print(json.dumps(peer), flush=True)
            for case, extra in [("shim/ctr-run/true", ["--runtime-config-path", str(config)]),
                                ("shim/embedded/ctr-run/true", [])]:
                line = measure(containerd, case, runs, "io.containerd.megavisor.v1", extra)
                line["peer"] = peer["case"]
                line["speedup_vs_peer"] = round(peer["p50_us"] / line["p50_us"], 2)
                print(json.dumps(line), flush=True)
        finally:
            supervisor.terminate()
            supervisor.wait(timeout=20)
            containerd.stop()


if __name__ == "__main__":
    main()
