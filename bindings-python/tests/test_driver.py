"""The installed `megavisor` package, embedded and connected, against real components."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

import megavisor
from conftest import KEY, TEST_BUNDLE, Supervisor


@pytest.fixture(params=["embedded", "connected"])
def driver(request: pytest.FixtureRequest, supervisor: Supervisor) -> megavisor.Driver:
    """The same tests run on both drivers: the API promises the same behaviour."""
    if request.param == "embedded":
        return megavisor.embedded()
    return megavisor.connect(supervisor.socket)


def test_default_bundle_ships_inside_the_package() -> None:
    assert megavisor.DEFAULT_BUNDLE.is_relative_to(Path(megavisor.__file__).parent)
    assert (megavisor.DEFAULT_BUNDLE / "manifest.json").is_file()
    assert (megavisor.DEFAULT_BUNDLE / "megabin.cwasm").is_file()
    assert megavisor.DEFAULT_TRUSTED_KEY.is_file()


def test_run_returns_output_exit_code_and_timings(driver: megavisor.Driver) -> None:
    r = driver.run("echo", ["hello", "world"])
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (0, b"hello world\n", b"", True)
    assert r.tool == "echo" and r.stdout_total == 12 and r.stdout_tail == b"hello world\n"
    assert r.timings.total_us >= r.timings.run_us > 0
    assert r.execution_id is None and not r.cached


def test_stdin_and_non_zero_exit(driver: megavisor.Driver) -> None:
    assert driver.run("wc", ["-l"], stdin=b"a\nb\nc\n").stdout.strip() == b"3"
    failed = driver.run("false")
    assert (failed.exit_code, failed.ok) == (1, False)


def test_params_are_rendered_through_the_schema(driver: megavisor.Driver) -> None:
    r = driver.run("wc", params={"lines": True, "stdin": "x\ny\n"})
    assert r.stdout.strip() == b"2"


def test_execution_id_replays_from_the_cache(driver: megavisor.Driver) -> None:
    execution_id = f"py-{driver.mode}-{time.monotonic_ns()}"
    first = driver.run("echo", ["once"], execution_id=execution_id)
    again = driver.run("echo", ["once"], execution_id=execution_id)
    assert (first.cached, again.cached) == (False, True)
    assert again.stdout == b"once\n" and again.execution_id == execution_id


def test_tools_describe_name_description_and_schema(driver: megavisor.Driver) -> None:
    tools = {tool.name: tool for tool in driver.tools()}
    assert {"true", "echo", "wc", "calc"} <= tools.keys()
    calc = tools["calc"]
    assert "expression" in calc.description.lower() or calc.description
    assert calc.schema["required"] == ["expression"]
    assert calc.timeout_ms > 0 and calc.memory_bytes > 0


def test_arun_does_not_block_the_event_loop(driver: megavisor.Driver) -> None:
    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(driver.arun("echo", [str(i)]) for i in range(200)))
        r = await driver.arun("wc", ["-l"], stdin=b"a\nb\n")
        tick_task.cancel()
        assert [x.stdout for x in results] == [f"{i}\n".encode() for i in range(200)]
        assert r.stdout.strip() == b"2"
        assert ticks > 0  # the loop kept running while calls were in flight

    asyncio.run(main())


def test_arun_raises_typed_errors(driver: megavisor.Driver) -> None:
    async def main() -> None:
        with pytest.raises(megavisor.ToolNotFound):
            await driver.arun("no-such-tool")

    asyncio.run(main())


def test_one_driver_shared_by_threads_releases_the_gil(driver: megavisor.Driver) -> None:
    failures: list = []

    def worker(n: int) -> None:
        for i in range(100):
            payload = f"{n}-{i}".encode()
            out = driver.run("cat", stdin=payload).stdout
            if out != payload:
                failures.append((payload, out))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_long_call_releases_the_gil() -> None:
    """While one thread waits for a tool, another thread runs Python code."""
    driver = megavisor.embedded(TEST_BUNDLE, trusted_key=KEY)
    done = threading.Event()
    counted = 0

    def count() -> None:
        nonlocal counted
        while not done.is_set():
            counted += 1

    counter = threading.Thread(target=count)
    counter.start()
    before = counted
    driver.run("spin", ["300"])
    during = counted - before
    done.set()
    counter.join()
    assert during > 10_000, f"the counting thread ran only {during} times in 300 ms"


def test_artifacts_reach_python(driver_on_test_bundle: megavisor.Driver) -> None:
    r = driver_on_test_bundle.run("artifacts")
    assert r.ok, r.stderr
    assert r.artifacts["report"] == "/out/report.txt" and r.artifacts["count"] == "2"


@pytest.fixture(params=["embedded", "connected"])
def driver_on_test_bundle(
    request: pytest.FixtureRequest, test_supervisor: Supervisor
) -> megavisor.Driver:
    if request.param == "embedded":
        return megavisor.embedded(TEST_BUNDLE, trusted_key=KEY)
    return megavisor.connect(test_supervisor.socket)


def test_connect_uses_megavisor_socket(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEGAVISOR_SOCKET", str(supervisor.socket))
    assert megavisor.connect().run("echo", ["via env"]).stdout == b"via env\n"


def test_a_native_tool_runs_through_the_supervisor_with_its_usage(
    start_supervisor: Callable,
) -> None:
    sup = start_supervisor(TEST_BUNDLE, "--allow-binary", "/usr/bin/wc")
    client = megavisor.connect(sup.socket)
    r = client.run("/usr/bin/wc", ["-l"], stdin=b"a\nb\n")
    assert (r.exit_code, r.stdout.strip(), r.tool) == (0, b"2", "/usr/bin/wc")
    assert r.usage is not None and r.usage.limits_hit == []
    assert client.run("true").usage is None
    with pytest.raises(megavisor.NotAllowed, match="allowlist"):
        client.run("/bin/ls")


def test_an_embedded_driver_runs_the_native_tools_it_allows(tmp_path: Path) -> None:
    eng = megavisor.embedded(allow_binaries=["/usr/bin/wc"], native_env=["LC_*"])
    r = eng.run("/usr/bin/wc", ["-l"], stdin=b"a\nb\nc\n", env={"LC_ALL": "C"})
    assert (r.stdout.strip(), r.tool) == (b"3", "/usr/bin/wc")
    assert r.usage is not None and r.usage.cgroup is None
    with pytest.raises(megavisor.NotAllowed, match="allowlist"):
        eng.run("/bin/ls")
    with pytest.raises(megavisor.NotAllowed, match="SECRET"):
        eng.run("/usr/bin/wc", env={"SECRET": "x"})
    allowlist = tmp_path / "allow"
    allowlist.write_text("# tools\n/usr/bin/id  # who am I\n")
    by_file = megavisor.embedded(allowlist=allowlist)
    assert by_file.run("/usr/bin/id", ["-u"]).ok
    with pytest.raises(megavisor.NotAllowed, match="not enabled"):
        megavisor.embedded().run("/usr/bin/wc")


def test_an_embedded_driver_runs_under_a_policy_file_or_dict(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[limits]\nmax_timeout = "2s"\n\n'
        '[native]\ndefault_timeout = "1s"\nbinaries = ["/usr/bin/wc"]\n'
    )
    by_file = megavisor.embedded(policy=policy, allow_binaries=["/usr/bin/id"])
    assert by_file.run("/usr/bin/wc", ["-c"], stdin=b"four").stdout.strip() == b"4"
    assert by_file.run("/usr/bin/id", ["-u"]).ok  # the keyword argument adds to the file's list
    with pytest.raises(megavisor.BadRequest, match="maximum of 2000 ms"):
        by_file.run("true", timeout=5.0)
    inline = megavisor.embedded(policy={"native": {"binaries": ["/usr/bin/wc"]}})
    assert inline.run("/usr/bin/wc", ["-c"], stdin=b"ab").stdout.strip() == b"2"
    with pytest.raises(megavisor.BadRequest, match=r"policy <inline>: key `native.binaries`"):
        megavisor.embedded(policy={"native": {"binaries": "/usr/bin/wc"}})
    broken = tmp_path / "broken.toml"
    broken.write_text("[limits]\nmax_timeout = 5\n")
    with pytest.raises(megavisor.BadRequest, match=f"policy {broken}: key `limits.max_timeout`"):
        megavisor.embedded(policy=broken)


@pytest.fixture(params=["embedded", "connected"])
def one_slot_driver(
    request: pytest.FixtureRequest, start_supervisor: Callable
) -> megavisor.Driver:
    """A driver that runs one call at a time, so a call left running would be seen."""
    if request.param == "embedded":
        return megavisor.embedded(TEST_BUNDLE, trusted_key=KEY, max_concurrency=1)
    sup = start_supervisor(TEST_BUNDLE, "--max-concurrency", "1")
    return megavisor.connect(sup.socket)


def test_a_cancelled_arun_stops_its_tool_and_frees_its_place(
    one_slot_driver: megavisor.Driver,
) -> None:
    """`asyncio.wait_for` giving up (or `task.cancel()`) stops the tool within milliseconds:
    the next call does not wait out the first one's 10 s time limit."""

    async def main() -> None:
        for tool, args in (("spin", []), ("sleep", ["60000"])):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(one_slot_driver.arun(tool, args), timeout=0.2)
            started = time.monotonic()
            r = await one_slot_driver.arun("true")
            assert r.ok
            assert time.monotonic() - started < 0.2, f"{tool} kept its place"

    asyncio.run(main())


def test_a_queued_calls_time_limit_covers_its_wait(one_slot_driver: megavisor.Driver) -> None:
    async def main() -> None:
        busy = asyncio.ensure_future(one_slot_driver.arun("spin", ["400"]))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(megavisor.Timeout):
            await one_slot_driver.arun("true", timeout=0.1)
        assert time.monotonic() - started < 0.25
        r = await one_slot_driver.arun("true")
        assert r.timings.queue_us > 100_000, r.timings
        assert (await busy).ok

    asyncio.run(main())


def test_a_session_keeps_what_a_call_defines(driver: megavisor.Driver) -> None:
    with driver.open_session("python") as session:
        assert session.run(params={"code": "def area(r):\n    return 3 * r * r"}).ok
        assert session.run(params={"code": "print(area(2))"}).stdout == b"12\n"

        async def step3() -> bytes:
            return (await session.arun(params={"code": "print(area(3))"})).stdout

        assert asyncio.run(step3()) == b"27\n"
    with pytest.raises(megavisor.SessionGone):
        session.run(params={"code": "print(1)"})
    with pytest.raises(megavisor.BadRequest):
        driver.open_session("wc")
    # Outside the session, every call starts fresh.
    fresh = driver.run("python", params={"code": "print('area' in globals())"})
    assert fresh.stdout == b"False\n"
