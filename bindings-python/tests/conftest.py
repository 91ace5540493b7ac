"""Fixtures: the repository's build (bundles, keys, the `megavisor` binary) and real
supervisors started from it. The package under test is the installed one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
MEGAVISOR = Path(os.environ.get("MEGAVISOR", ROOT / "target" / "release" / "megavisor"))
KEY = BUILD / "keys" / "megavisor.pub"
TEST_BUNDLE = BUILD / "test-bundle"


class Supervisor:
    """A `megavisor serve` process on a private socket, ready when constructed."""

    def __init__(self, bundle: Path, extra: Sequence[str] = ()) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = Path(self.dir.name) / "megavisor.sock"
        command: List[str] = [
            str(MEGAVISOR),
            "serve",
            "--socket",
            str(self.socket),
            "--bundle",
            str(bundle),
            "--trusted-key",
            str(KEY),
            *extra,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if not ready.startswith("megavisor ready"):
            assert self.process.stderr is not None
            raise AssertionError(ready + self.process.stderr.read())

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def supervisor() -> Iterator[Supervisor]:
    """A supervisor on the default bundle, shared by the tests that only call tools; its
    peers may mount what lies in the temporary directory."""
    sup = Supervisor(BUILD / "bundle", ["--mount-root", tempfile.gettempdir()])
    yield sup
    sup.stop()


@pytest.fixture(scope="session")
def test_supervisor() -> Iterator[Supervisor]:
    """A supervisor on the test bundle (spin, alloc, trap, artifacts, ...)."""
    sup = Supervisor(TEST_BUNDLE)
    yield sup
    sup.stop()


@pytest.fixture
def start_supervisor() -> Iterator:
    """Starts supervisors with extra flags, stopped after the test."""
    started: List[Supervisor] = []

    def start(bundle: Path = TEST_BUNDLE, *extra: str) -> Supervisor:
        sup = Supervisor(bundle, extra)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.stop()


@pytest.fixture
def tampered_bundle(tmp_path: Path) -> Path:
    """A copy of the default bundle whose wasm has one byte changed."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUILD / "bundle", bundle)
    wasm = bundle / "megabin.wasm"
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wasm.write_bytes(bytes(data))
    return bundle


@pytest.fixture
def stranger_key(tmp_path: Path) -> Path:
    """A freshly generated key that signed nothing."""
    key = tmp_path / "stranger"
    subprocess.run([str(MEGAVISOR), "keygen", "--out", str(key)], check=True, capture_output=True)
    return Path(f"{key}.pub")
