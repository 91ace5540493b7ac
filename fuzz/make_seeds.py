"""Writes the fuzz targets' seed corpora (fuzz/corpus/TARGET/*) from the repository's own
files: the set-up's bundles, the entries files and the wire and gRPC schemas. Run by
`make fuzz-seeds` with the test virtualenv's Python (it needs grpcio-tools); the results
are committed, so fuzzing starts from real inputs."""

import importlib.resources
import importlib.util
import json
import struct
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
CORPUS = ROOT / "fuzz" / "corpus"


def compiled(proto: str, module: str):
    """The generated module of `proto`, loaded from its file (the installed `megavisor`
    package would shadow a `megavisor.v1` package on the path)."""
    out = Path(tempfile.mkdtemp())
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}", f"--python_out={out}", proto]
    )
    assert status == 0, proto
    path = out / Path(proto).relative_to(ROOT / "proto").with_name(module + ".py")
    spec = importlib.util.spec_from_file_location(module, path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def seed(target: str, name: str, data: bytes) -> None:
    (CORPUS / target).mkdir(parents=True, exist_ok=True)
    (CORPUS / target / name).write_bytes(data)


def frame(message) -> bytes:
    body = message.SerializeToString()
    return struct.pack("<I", len(body)) + body


def sample(schema: dict) -> dict:
    """Arguments that fill every property of an argument schema with a plausible value."""
    values = {"string": "a b", "boolean": True, "integer": 3, "number": 2.5}
    params = {}
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type")
        kind = kind[0] if isinstance(kind, list) else kind
        params[name] = ["x", "-y"] if kind == "array" else values.get(kind, "z")
    return params


def main() -> None:
    wire = compiled(str(ROOT / "proto" / "megavisor" / "v1" / "wire.proto"), "wire_pb2")
    driver = compiled(str(ROOT / "proto" / "runtime" / "v1" / "driver.proto"), "driver_pb2")

    for bundle in ("bundle", "test-bundle"):
        manifest = (BUILD / bundle / "manifest.json").read_bytes()
        signature = (BUILD / bundle / "manifest.json.sig").read_bytes()
        seed("manifest", bundle, manifest + b"\0" + signature)

    for entries in ("megabin", "testbin"):
        for entry in json.loads((ROOT / "guest" / entries / "entries.json").read_text())["entries"]:
            params = json.dumps(sample(entry["arguments"])).encode()
            seed("arguments", f"{entries}-{entry['name']}", json.dumps(entry).encode() + b"\0" + params)

    hello = wire.Hello(protocol_version=3, transport=wire.TRANSPORT_SOCKET, client="seed")
    calls = [
        wire.ClientMessage(id=1, call=wire.Call(name="echo", args=["hi"], stdin=b"in")),
        wire.ClientMessage(id=2, call=wire.Call(name="args", params_json='{"args":["a"]}')),
        wire.ClientMessage(
            id=3,
            call=wire.Call(
                native="/usr/bin/wc",
                env=[wire.EnvVar(name="A", value="b")],
                mounts=[wire.Mount(host="/tmp", guest="/data", writable=True)],
                narrow_capabilities=True,
                capabilities=["fs:read:/data/**"],
                limits=wire.Limits(timeout_ms=100, memory_bytes=1 << 20),
                execution_id="seed-3",
            ),
        ),
        wire.ClientMessage(id=4, list_tools=wire.ListTools()),
        wire.ClientMessage(id=1, cancel=wire.Cancel()),
    ]
    seed("frame", "hello-and-calls", frame(hello) + b"".join(frame(c) for c in calls))

    # The ring as the fuzz target lays it out: the client's part of the header page from
    # offset 64 (request head, then tail, sleeping flag and the reply ring's indices, a
    # cache line each), then 4 request slots of 256 bytes.
    for n, message in enumerate(calls):
        body = message.SerializeToString()
        memory = bytearray(4096 - 64 + 256)
        memory[0:4] = struct.pack("<I", 1)  # request head: one message
        slot = 4096 - 64
        memory[slot : slot + 8] = struct.pack("<II", len(body), 0)
        memory[slot + 16 : slot + 16 + len(body)] = body
        seed("ring", f"one-message-{n}", bytes(memory))

    for n, request in enumerate(
        [
            driver.ExecuteRequest(instruction="wc", params={"lines": "true", "stdin": "a\nb\n"}),
            driver.ExecuteRequest(instruction="args", args=["x"], env={"K": "v"}, timeout_ms=50),
            driver.ExecuteRequest(instruction="args", params_json='{"args":["y"]}', full_output=True),
            driver.ExecuteRequest(instruction="/usr/bin/wc", execution_id="e", memory_bytes=1 << 20),
        ]
    ):
        seed("grpc_request", f"execute-{n}", request.SerializeToString())

    seed(
        "allowlist",
        "seed-000",
        b"# allowed tools\n\n/usr/bin/ctr\n  /bin/ls   # listing\n#/bin/rm\nrelative/path\n/opt/a b #c\n",
    )


if __name__ == "__main__":
    main()
