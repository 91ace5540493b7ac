"""The soak: one `megavisor serve` and 8 client processes (4 Rust, 2 Python, 2 Node) making
mixed calls with unique payloads, every reply checked against its own request.

    bench/soak [--calls N] [--window-ms MS]      (default 10 million calls in all)

Every client makes the same plan of calls (`bench/src/soak.rs` is the reference): call
`seq` of client `c` is, by `seq % 4`, `cat` of a payload made of the token `c:seq|`
(up to 8 KiB, so some spill out of a ring slot), `echo c-seq`, `sha256sum` of such a
payload, and otherwise `cat` of 64 bytes of it, or once in a hundred a tool that does not
exist (`tool_not_found` expected). Sixteen are in flight at a time on each connection.

Prints JSON lines: `soak/window` per time window (calls per second, p50 and p99 across all
clients), then `soak/summary` (calls, lost, duplicated and crossed replies, the
supervisor's RSS and open descriptors at start and end, the CPU). Exits 1 if any reply was
lost, duplicated or crossed, or the supervisor kept descriptors.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
CLIENTS = ["rust"] * 4 + ["python"] * 2 + ["node"] * 2


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def client_command(lang: str, socket: Path, client: int, calls: int, window_ms: int):
    if lang == "rust":
        return [
            str(TARGET / "megavisor-bench"),
            "soak-client",
            "--socket",
            str(socket),
            "--client",
            str(client),
            "--calls",
            str(calls),
            "--window-ms",
            str(window_ms),
        ]
    script = {"python": [str(BUILD / "venv" / "bin" / "python"), str(ROOT / "bench/python/soak.py")],
              "node": ["node", "--no-warnings", str(ROOT / "bench/node/soak.js")]}[lang]
    return [*script, str(socket), str(client), str(calls), str(window_ms)]


def percentile(hist: dict, q: float) -> float:
    """The `q` quantile, in microseconds, of a histogram of 5%-wide log buckets."""
    total = sum(hist.values())
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= q * total:
            return math.exp((bucket + 0.5) / 20)
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000_000, help="calls in all")
    parser.add_argument("--window-ms", type=int, default=5000, help="latency window")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="megavisor-soak-"))
    socket = workdir / "soak.sock"
    log = open(workdir / "serve.log", "w")
    supervisor = subprocess.Popen(
        [
            str(TARGET / "megavisor"),
            "serve",
            "--socket",
            str(socket),
            "--bundle",
            str(BUILD / "bundle"),
            "--trusted-key",
            str(BUILD / "keys" / "megavisor.pub"),
            # Room for every client's 16 calls in flight: a soak counts lost replies, and
            # a full queue would refuse calls as busy (correctly, but not what is measured).
            "--queue-depth",
            str(16 * len(CLIENTS)),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    ready = supervisor.stdout.readline()
    if not ready.startswith("megavisor ready"):
        print(f"soak: the supervisor did not start: {ready}", file=sys.stderr)
        return 1
    # A warm-up first, with calls in flight together so that every guest thread runs some:
    # the engine opens what it keeps for good (its async runtime's descriptors) on a
    # thread's first calls, and the baseline is the supervisor warm.
    subprocess.run(
        client_command("rust", socket, len(CLIENTS), 2000, args.window_ms),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rss_start, fds_start = status_kb(supervisor.pid, "VmRSS"), open_fds(supervisor.pid)
    env = dict(os.environ, NODE_PATH=str(BUILD / "node" / "consumer" / "node_modules"))
    share = args.calls // len(CLIENTS)
    started = time.monotonic()
    clients = [
        subprocess.Popen(
            client_command(lang, socket, n, share, args.window_ms),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n, lang in enumerate(CLIENTS)
    ]
    rss_max = rss_start
    while any(c.poll() is None for c in clients):
        rss_max = max(rss_max, status_kb(supervisor.pid, "VmRSS"))
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    results = []
    for lang, client in zip(CLIENTS, clients):
        out = client.stdout.read()
        if client.returncode != 0 or not out.strip():
            print(f"soak: a {lang} client failed ({client.returncode})", file=sys.stderr)
            return 1
        results.append(json.loads(out.strip().splitlines()[-1]))
    # The supervisor notices the clients gone and frees their rings and descriptors.
    settle = time.monotonic() + 5
    while open_fds(supervisor.pid) > fds_start and time.monotonic() < settle:
        time.sleep(0.1)
    rss_end, fds_end = status_kb(supervisor.pid, "VmRSS"), open_fds(supervisor.pid)
    supervisor.terminate()
    supervisor.wait(timeout=30)

    windows: dict = {}
    for result in results:
        for index, hist in enumerate(result["windows"]):
            merged = windows.setdefault(index, {})
            for bucket, n in hist.items():
                merged[int(bucket)] = merged.get(int(bucket), 0) + n
    all_calls: dict = {}
    for index in sorted(windows):
        hist = windows[index]
        for bucket, n in hist.items():
            all_calls[bucket] = all_calls.get(bucket, 0) + n
        print(json.dumps({
            "case": "soak/window",
            "t_s": index * args.window_ms / 1000,
            "ops_per_s": round(sum(hist.values()) / (args.window_ms / 1000)),
            "p50_us": round(percentile(hist, 0.5), 1),
            "p99_us": round(percentile(hist, 0.99), 1),
        }))
    total = {k: sum(r[k] for r in results) for k in ("calls", "ok", "lost", "duplicated", "crossed")}
    summary = {
        "case": "soak/summary",
        **total,
        "clients": {lang: CLIENTS.count(lang) for lang in dict.fromkeys(CLIENTS)},
        "errors": [r["errors"] for r in results if r["errors"]],
        "elapsed_s": round(elapsed, 1),
        "ops_per_s": round(total["calls"] / elapsed),
        "p50_us": round(percentile(all_calls, 0.5), 1),
        "p99_us": round(percentile(all_calls, 0.99), 1),
        "rss_start_kb": rss_start,
        "rss_max_kb": rss_max,
        "rss_end_kb": rss_end,
        "fds_start": fds_start,
        "fds_end": fds_end,
        "cpu": cpu(),
    }
    print(json.dumps(summary))
    failed = total["lost"] or total["duplicated"] or total["crossed"] or total["ok"] != total["calls"]
    if failed or fds_end > fds_start:
        print(f"soak: FAILED (log: {workdir / 'serve.log'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
