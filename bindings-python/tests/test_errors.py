"""Every error kind reaches Python as its own exception class, embedded and connected."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import megavisor
from conftest import BUILD, KEY, TEST_BUNDLE, Supervisor


def test_the_exception_classes_are_the_one_table_of_kinds() -> None:
    table = megavisor._native.error_kinds()
    assert sorted(megavisor.errors.BY_KIND) == sorted(kind["name"] for kind in table)
    for kind in table:
        cls = megavisor.errors.BY_KIND[kind["name"]]
        assert cls.__name__ == kind["python_class"]
        assert getattr(megavisor, kind["python_class"]) is cls


def test_every_class_is_a_megavisor_error_with_its_kind() -> None:
    for kind, cls in megavisor.errors.BY_KIND.items():
        err = cls("message", kind)
        assert isinstance(err, megavisor.MegavisorError)
        assert (err.kind, str(err), err.partial) == (kind, "message", None)
    assert issubclass(megavisor.Timeout, TimeoutError)
    assert issubclass(megavisor.ConnectionLost, ConnectionError)
    assert issubclass(megavisor.BadRequest, ValueError)


def test_hash_mismatch_names_the_file(tampered_bundle: Path) -> None:
    with pytest.raises(megavisor.HashMismatch) as caught:
        megavisor.embedded(tampered_bundle, trusted_key=KEY)
    assert caught.value.kind == "hash_mismatch"
    assert "megabin.wasm" in str(caught.value)


def test_bad_signature_from_an_untrusted_key(stranger_key: Path) -> None:
    with pytest.raises(megavisor.BadSignature) as caught:
        megavisor.embedded(trusted_key=stranger_key)
    assert caught.value.kind == "bad_signature"


def test_internal_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(megavisor.Internal) as caught:
        megavisor.embedded(tmp_path / "absent", trusted_key=KEY)
    assert "manifest.json" in str(caught.value)


@pytest.fixture(params=["embedded", "connected"])
def test_driver(request: pytest.FixtureRequest, test_supervisor: Supervisor) -> megavisor.Driver:
    if request.param == "embedded":
        return megavisor.embedded(TEST_BUNDLE, trusted_key=KEY)
    return megavisor.connect(test_supervisor.socket)


def test_tool_not_found(test_driver: megavisor.Driver) -> None:
    with pytest.raises(megavisor.ToolNotFound, match="available: "):
        test_driver.run("no-such-tool")


def test_not_allowed(supervisor: Supervisor) -> None:
    for driver in (megavisor.embedded(), megavisor.connect(supervisor.socket)):
        with pytest.raises(megavisor.NotAllowed, match="SECRET"):
            driver.run("echo", env={"SECRET": "x"})


def test_timeout_keeps_the_partial_output(test_driver: megavisor.Driver) -> None:
    with pytest.raises(megavisor.Timeout) as caught:
        test_driver.run("spin", timeout=0.05)
    assert caught.value.kind == "timeout"
    assert caught.value.partial is not None


def test_memory_limit(test_driver: megavisor.Driver) -> None:
    with pytest.raises(megavisor.MemoryLimit):
        test_driver.run("alloc", memory=8 << 20)


def test_trap(test_driver: megavisor.Driver) -> None:
    with pytest.raises(megavisor.Trap):
        test_driver.run("trap")


def test_bad_request(test_driver: megavisor.Driver) -> None:
    with pytest.raises(megavisor.BadRequest, match="timeout"):
        test_driver.run("true", timeout=-1)
    with pytest.raises(megavisor.BadRequest, match="unknown argument"):
        megavisor.embedded().run("echo", params={"bogus": 1})


def test_busy_when_the_supervisor_is_saturated(start_supervisor: Callable) -> None:
    sup = start_supervisor(TEST_BUNDLE, "--max-concurrency", "1", "--queue-depth", "0")
    client = megavisor.connect(sup.socket)

    def hold() -> None:
        # A probe may take the only slot first; then the holder is the one told busy.
        while True:
            try:
                client.run("spin", ["2500"])
                return
            except megavisor.Busy:
                time.sleep(0.01)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        deadline = time.monotonic() + 2.0
        with pytest.raises(megavisor.Busy):
            while time.monotonic() < deadline:  # until the spin holds the only slot
                megavisor.connect(sup.socket).run("spin", ["1"])
                time.sleep(0.01)
    finally:
        holder.join()


def test_shutting_down_while_draining(start_supervisor: Callable) -> None:
    sup = start_supervisor(TEST_BUNDLE)
    client = megavisor.connect(sup.socket)

    async def main() -> None:
        in_flight = asyncio.ensure_future(client.arun("spin", ["1000"]))
        await asyncio.sleep(0.2)
        sup.terminate()
        await asyncio.sleep(0.2)
        with pytest.raises(megavisor.ShuttingDown):
            await client.arun("true")
        assert (await in_flight).stdout.strip() == b"spun"  # the call in flight finished

    asyncio.run(main())


def test_connection_lost(start_supervisor: Callable, tmp_path: Path) -> None:
    with pytest.raises(megavisor.ConnectionLost):
        megavisor.connect(tmp_path / "nobody.sock")
    sup = start_supervisor(TEST_BUNDLE)
    client = megavisor.connect(sup.socket)
    assert client.run("true").ok
    sup.process.kill()
    sup.process.wait()
    with pytest.raises(megavisor.ConnectionLost):
        client.run("true")


@pytest.fixture
def garbage_server(tmp_path: Path) -> Iterator[Path]:
    """A socket whose server answers the Hello with a frame that is not a Welcome."""
    path = tmp_path / "garbage.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = b"\xff\xff\xff\xff not protobuf"
            conn.sendall(struct.pack("<I", len(body)) + body)
            time.sleep(0.5)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield path
    server.close()


def test_protocol(garbage_server: Path) -> None:
    with pytest.raises(megavisor.Protocol):
        megavisor.connect(garbage_server)


def test_a_bundle_built_elsewhere_is_checked_with_its_own_key() -> None:
    """The key shipped beside the default bundle verifies it; the set-up's does too."""
    assert megavisor.embedded(trusted_key=BUILD / "keys" / "megavisor.pub").run("true").ok
