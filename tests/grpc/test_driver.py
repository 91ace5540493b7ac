"""The RuntimeDriver gRPC API (proto/runtime/v1/driver.proto) driven by a Python client
generated with grpcio-tools, against a real `megavisor serve`, as an orchestrator would."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
MEGAVISOR = Path(os.environ.get("MEGAVISOR", ROOT / "target" / "release" / "megavisor"))


def generated_stubs(out: Path):
    """Generates the Python client from the .proto and imports it."""
    import importlib.resources

    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / "proto" / "runtime" / "v1" / "driver.proto"),
        ]
    )
    assert status == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from runtime.v1 import driver_pb2, driver_pb2_grpc  # noqa: E402

    return driver_pb2, driver_pb2_grpc


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return generated_stubs(tmp_path_factory.mktemp("stubs"))


class Supervisor:
    def __init__(self, bundle: Path, extra=()):
        self.dir = tempfile.TemporaryDirectory()
        self.socket = Path(self.dir.name) / "ring.sock"
        self.grpc_socket = Path(self.dir.name) / "driver.grpc"
        self.process = subprocess.Popen(
            [
                str(MEGAVISOR),
                "serve",
                "--socket",
                str(self.socket),
                "--grpc-socket",
                str(self.grpc_socket),
                "--bundle",
                str(bundle),
                "--trusted-key",
                str(BUILD / "keys" / "megavisor.pub"),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = self.process.stdout.readline()
        assert ready.startswith("megavisor ready"), ready + self.process.stderr.read()
        assert f"grpc_socket={self.grpc_socket}" in ready

    def channel(self):
        # gRPC's C core sends the socket path, percent-encoded, as the HTTP/2 authority of a
        # unix:// target, which the Rust HTTP/2 server refuses as malformed; name one.
        return grpc.insecure_channel(
            f"unix://{self.grpc_socket}", options=[("grpc.default_authority", "localhost")]
        )

    def stop(self):
        self.process.terminate()
        assert self.process.wait(timeout=30) == 0
        self.dir.cleanup()


def test_an_allowlisted_native_binary_runs_as_itself(stubs):
    """A native tool named by absolute path with args (e.g. `/usr/bin/ctr images ls`): a
    binary the manifest does not stand for runs natively when the allowlist allows it, and
    only then."""
    pb2, _ = stubs
    supervisor = Supervisor(BUILD / "bundle", extra=["--allow-binary", "/usr/bin/id"])
    try:
        stub = driver(supervisor, stubs)
        reply = stub.Execute(
            pb2.ExecuteRequest(instruction="/usr/bin/id", args=["-u"], execution_id="native-1")
        )
        assert reply.exit_code == 0
        assert reply.stdout_tail.strip() == str(os.getuid()).encode()
        assert reply.HasField("usage") and reply.tool == "/usr/bin/id"
        with pytest.raises(grpc.RpcError) as raised:
            stub.Execute(pb2.ExecuteRequest(instruction="/bin/ls"))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "allowlist" in raised.value.details()
    finally:
        supervisor.stop()


@pytest.fixture(scope="module")
def default(stubs):
    supervisor = Supervisor(BUILD / "bundle")
    yield supervisor
    supervisor.stop()


@pytest.fixture(scope="module")
def testing(stubs):
    supervisor = Supervisor(BUILD / "test-bundle")
    yield supervisor
    supervisor.stop()


def driver(supervisor, stubs):
    _, pb2_grpc = stubs
    return pb2_grpc.RuntimeDriverStub(supervisor.channel())


def error_kind(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("megavisor-error-kind", "")


def test_execute_renders_params_through_the_schema(default, stubs):
    pb2, _ = stubs
    reply = driver(default, stubs).Execute(
        pb2.ExecuteRequest(
            instruction="wc",
            subject_id="node1",
            params={"lines": "true", "stdin": "a\nb\nc\n"},
            execution_id="",
        )
    )
    assert reply.exit_code == 0
    assert reply.stdout_tail.decode().strip() == "3"
    assert reply.tool == "wc"
    assert reply.timings.total_us > 0


def test_execute_with_args_full_output_and_artifacts(testing, stubs):
    pb2, _ = stubs
    reply = driver(testing, stubs).Execute(
        pb2.ExecuteRequest(instruction="artifacts", execution_id="art-1", full_output=True)
    )
    assert reply.exit_code == 0
    assert reply.artifacts, reply


def test_idempotent_replay_by_execution_id(testing, stubs):
    pb2, _ = stubs
    stub = driver(testing, stubs)
    first = stub.Execute(pb2.ExecuteRequest(instruction="counter", execution_id="replay-1"))
    again = stub.Execute(pb2.ExecuteRequest(instruction="counter", execution_id="replay-1"))
    assert not first.cached and again.cached
    assert first.stdout_tail == again.stdout_tail


def test_unknown_instruction_is_not_found(default, stubs):
    pb2, _ = stubs
    with pytest.raises(grpc.RpcError) as raised:
        driver(default, stubs).Execute(pb2.ExecuteRequest(instruction="rm"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "available:" in raised.value.details()
    assert error_kind(raised.value) == "tool_not_found"


def test_bad_params_are_invalid_arguments(default, stubs):
    pb2, _ = stubs
    stub = driver(default, stubs)
    for params in ({"lines": "maybe"}, {"shell": "rm -rf /"}):
        with pytest.raises(grpc.RpcError) as raised:
            stub.Execute(pb2.ExecuteRequest(instruction="wc", params=params))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, params
        assert error_kind(raised.value) == "bad_request"


def test_timeout_and_grpc_deadline(testing, stubs):
    pb2, _ = stubs
    stub = driver(testing, stubs)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Execute(pb2.ExecuteRequest(instruction="spin", timeout_ms=100))
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_kind(raised.value) == "timeout"



def wait_for_the_slot(stub, pb2, within: float) -> float:
    """Runs `true` until the one guest slot takes it; returns how long that took."""
    started = time.monotonic()
    while True:
        try:
            assert stub.Execute(pb2.ExecuteRequest(instruction="true")).exit_code == 0
            return time.monotonic() - started
        except grpc.RpcError as busy:
            assert busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, busy
            assert error_kind(busy) == "busy"
            assert time.monotonic() - started < within, "the slot is still held"
            time.sleep(0.01)


@pytest.fixture()
def one_slot(stubs):
    """One guest slot and no queue: while a call runs, any other is refused as busy."""
    supervisor = Supervisor(
        BUILD / "test-bundle", extra=["--max-concurrency", "1", "--queue-depth", "0"]
    )
    yield supervisor
    supervisor.stop()


def test_a_missed_deadline_is_deadline_exceeded_every_time_and_frees_the_slot(one_slot, stubs):
    pb2, _ = stubs
    stub = driver(one_slot, stubs)
    for _ in range(20):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            stub.Execute(pb2.ExecuteRequest(instruction="spin"), timeout=0.1)
        # Never the server's CANCELLED: the deadline is the supervisor's to answer.
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, raised.value
        assert time.monotonic() - started < 0.5
        # spin's own limit is 10 s; stopped at the deadline, the slot is free at once.
        assert wait_for_the_slot(stub, pb2, within=0.5) < 0.1


def test_a_retry_with_less_time_left_runs_again_then_replays(one_slot, stubs):
    pb2, _ = stubs
    stub = driver(one_slot, stubs)
    request = pb2.ExecuteRequest(instruction="spin", args=["300"], execution_id="retry-1")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Execute(request, timeout=0.1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for_the_slot(stub, pb2, within=0.5)
    # The retry is the same request (the deadline is not part of it): it runs to its end.
    reply = stub.Execute(request, timeout=5)
    assert (reply.exit_code, reply.stdout_tail, reply.cached) == (0, b"spun\n", False)
    # One more, with hardly any time left, gets that answer at once.
    again = stub.Execute(request, timeout=0.05)
    assert again.cached and again.stdout_tail == b"spun\n"


def test_a_cancelled_rpc_stops_its_tool(one_slot, stubs):
    pb2, _ = stubs
    stub = driver(one_slot, stubs)
    for args in ([], ["60000"]):
        tool = "sleep" if args else "spin"
        call = stub.Execute.future(pb2.ExecuteRequest(instruction=tool, args=args))
        time.sleep(0.3)
        assert call.cancel()
        assert wait_for_the_slot(stub, pb2, within=1) < 0.2, tool


def test_a_binary_whose_hash_is_not_in_the_manifest_is_refused(default, stubs):
    pb2, _ = stubs
    with pytest.raises(grpc.RpcError) as raised:
        driver(default, stubs).Execute(pb2.ExecuteRequest(instruction="/bin/ls"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "EACCES" in raised.value.details() and "sha256" in raised.value.details()
    assert error_kind(raised.value) == "not_allowed"


def test_discover_lists_everything_an_orchestrator_needs(default, stubs):
    pb2, _ = stubs
    reply = driver(default, stubs).Discover(empty_pb2.Empty())
    assert reply.version.startswith("megavisor/")
    assert "grpc" in reply.features and "wasm" in reply.features
    assert reply.bundle.name == "default" and len(reply.bundle.wasm_sha256) == 64
    modules = [module.name for module in reply.bundle.modules]
    assert modules == ["megabin", "js", "python", "jq", "sqlite"]
    assert reply.bundle.modules[0].wasm_sha256 == reply.bundle.wasm_sha256
    assert all(len(module.wasm_blake3) == 64 for module in reply.bundle.modules)
    tools = {tool.name: tool for tool in reply.tools}
    assert len(tools) == 21 and {"js", "python", "jq", "sqlite"} <= tools.keys()
    # Every tool is callable from Discover alone: render a call from each schema.
    for tool in tools.values():
        assert tool.description and tool.timeout_ms > 0 and tool.memory_bytes > 0
        schema = json.loads(tool.arguments_schema_json)
        assert schema["type"] == "object"
    wc = json.loads(tools["wc"].arguments_schema_json)
    assert wc["properties"]["lines"]["type"] == "boolean"


def test_a_peer_that_is_not_allowed_is_refused(stubs):
    pb2, _ = stubs
    supervisor = Supervisor(BUILD / "bundle", extra=["--allow-uid", "4242"])
    try:
        with pytest.raises(grpc.RpcError) as raised:
            driver(supervisor, stubs).Execute(pb2.ExecuteRequest(instruction="true"))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"uid {os.geteuid()}" in raised.value.details()
    finally:
        supervisor.stop()
