"""One Python client process of the soak (`bench/soak`): the same calls as the Rust
client (`bench/src/soak.rs`), 16 in flight at a time through `arun`, every reply checked
against its own request; prints one JSON line with its counts and latency histograms.

    soak.py SOCKET CLIENT CALLS WINDOW_MS
"""

import asyncio
import hashlib
import json
import math
import sys
import time

import megavisor

WINDOW = 16


def plan(client: int, seq: int):
    """(tool, args, stdin, expected stdout or expected error class) of call `seq`."""
    token = f"{client}:{seq}|".encode()

    def payload(length: int) -> bytes:
        length = max(length, len(token))
        return (token * (length // len(token) + 1))[:length]

    kind = seq % 4
    if kind == 0:
        stdin = payload(seq * 7919 % 8192)
        return "cat", [], stdin, stdin
    if kind == 1:
        word = f"{client}-{seq}"
        return "echo", [word], None, f"{word}\n".encode()
    if kind == 2:
        stdin = payload(seq * 31 % 5000)
        return "sha256sum", [], stdin, f"{hashlib.sha256(stdin).hexdigest()}  -\n".encode()
    if seq % 100 == 3:
        return f"no-such-tool-{client}-{seq}", [], None, megavisor.ToolNotFound
    stdin = payload(64)
    return "cat", [], stdin, stdin


def bucket(seconds: float) -> int:
    return int(math.log(max(seconds * 1e6, 1.0)) * 20)


async def main(socket: str, client: int, calls: int, window_ms: int) -> None:
    driver = megavisor.connect(socket)
    started = time.monotonic()
    counts = {"ok": 0, "lost": 0, "duplicated": 0, "crossed": 0}
    errors: dict = {}
    answered = set()
    windows: list = []

    async def one(seq: int) -> None:
        tool, args, stdin, expect = plan(client, seq)
        sent = time.monotonic()
        try:
            result = await driver.arun(tool, args, stdin=stdin)
            outcome, error = result.stdout, None
        except megavisor.MegavisorError as err:
            outcome, error = None, err
        latency = time.monotonic() - sent
        index = int((sent - started) * 1000) // window_ms
        while len(windows) <= index:
            windows.append({})
        hist = windows[index]
        hist[bucket(latency)] = hist.get(bucket(latency), 0) + 1
        if isinstance(expect, bytes):
            if error is not None:
                counts["lost"] += 1
                errors[error.kind] = errors.get(error.kind, 0) + 1
            elif outcome == expect:
                counts["ok"] += 1
                answered.add(hash(expect))
            elif hash(outcome) in answered:
                counts["duplicated"] += 1
            else:
                counts["crossed"] += 1
        elif isinstance(error, expect):
            counts["ok"] += 1
        elif error is not None:
            counts["lost"] += 1
            errors[error.kind] = errors.get(error.kind, 0) + 1
        else:
            counts["crossed"] += 1

    for first in range(0, calls, WINDOW):
        await asyncio.gather(*(one(seq) for seq in range(first, min(first + WINDOW, calls))))
    line = {
        "lang": "python",
        "client": client,
        "calls": calls,
        **counts,
        "errors": errors,
        "window_ms": window_ms,
        "windows": [{str(b): n for b, n in sorted(h.items())} for h in windows],
    }
    print(json.dumps(line))


if __name__ == "__main__":
    socket, client, calls, window_ms = sys.argv[1], *map(int, sys.argv[2:5])
    asyncio.run(main(socket, client, calls, window_ms))
