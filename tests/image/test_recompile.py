"""`megavisor recompile` and `megavisor run-image` on images the tests build themselves:
what maps, what is denied, and every way a map or an image can be wrong."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
MEGAVISOR = Path(os.environ.get("MEGAVISOR", ROOT / "target" / "release" / "megavisor"))
BUILD_IMAGE = Path(__file__).with_name("build_image.py")
KEY = BUILD / "keys" / "megavisor"
TRUST = ["--bundle", str(BUILD / "bundle"), "--trusted-key", str(KEY) + ".pub"]

# The tools image: a copy of the host's wc (the default bundle's `wc` records its digest
# among its originals), a symlink to it, dash and id (no entry stands for them), a file
# a tool reads, and a second layer with a whiteout.
TOOLS_LAYERS = [
    [
        {"path": "bin", "dir": True},
        {"path": "bin/wc", "copy": "/usr/bin/wc"},
        {"path": "bin/sh", "copy": "/bin/dash"},
        {"path": "bin/id", "copy": "/usr/bin/id"},
        {"path": "bin/count", "symlink": "wc"},
        {"path": "etc/motd", "text": "one\ntwo\nthree\n"},
        {"path": "etc/secret", "text": "gone\n"},
        {"path": "opt/tool.sh", "text": "#!/bin/sh\necho hi\n", "mode": 0o755},
    ],
    [
        {"path": "etc/.wh.secret", "text": ""},
        {"path": "usr/bin/lines", "symlink": "/bin/wc"},
    ],
]


def megavisor(*args, stdin=None, check=False):
    result = subprocess.run(
        [str(MEGAVISOR), *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def build_image(path: Path, layers, fmt="docker", name="tools:1", extra=()):
    args = [sys.executable, str(BUILD_IMAGE), "--format", fmt, "--name", name, "--out", str(path)]
    for layer in layers:
        args += ["--layer", json.dumps(layer)]
    subprocess.run([*args, *extra], check=True)
    return path


def recompile(image: Path, out: Path, *extra):
    return megavisor("recompile", str(image), "--out", str(out), "--key", str(KEY), *TRUST, *extra)


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    """The tools image, recompiled: (original tarball, output directory, --json outcome)."""
    work = tmp_path_factory.mktemp("tools")
    image = build_image(work / "tools.tar", TOOLS_LAYERS)
    result = recompile(image, work / "out", "--json")
    assert result.returncode == 0, result.stderr
    return image, work / "out", json.loads(result.stdout)


def test_executables_map_by_content_and_the_rest_is_denied(tools):
    _, out, outcome = tools
    files = outcome["map"]["files"]
    assert sorted(files) == [
        "/bin/count", "/bin/id", "/bin/sh", "/bin/wc", "/opt/tool.sh", "/usr/bin/lines",
    ]
    assert files["/bin/wc"]["run"] == {"entry": "wc"}
    assert files["/bin/count"]["run"] == {"entry": "wc"}
    assert files["/bin/count"]["target"] == "/bin/wc"
    assert files["/usr/bin/lines"]["target"] == "/bin/wc", "absolute symlinks resolve in the image"
    assert files["/bin/id"]["run"] == "denied"
    assert files["/opt/tool.sh"]["run"] == "denied"
    assert outcome["counts"] == {"mapped": 3, "native": 0, "denied": 3}
    assert outcome["image"]["name"] == "docker.io/library/tools:1"
    assert outcome["map"]["bundle"]["digest"].startswith("sha256:")
    assert (out / "oci" / "index.json").is_file() and (out / "image.tar").is_file()
    index = json.loads((out / "oci" / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((out / "oci" / "blobs" / "sha256" / digest).read_text())
    assert manifest["annotations"]["io.megavisor.runtime"] == "io.containerd.megavisor.v1"
    assert len(manifest["layers"]) == 3, "the original two layers and the map's"


def test_the_summary_table_names_every_path(tools):
    image, _, _ = tools
    out = image.parent / "table"
    result = recompile(image, out)
    assert result.returncode == 0, result.stderr
    assert "applying layer 1/2" in result.stderr and "hashing the executables" in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("/bin/count") and "entry wc" in line for line in lines)
    assert any(line.startswith("/bin/id") and "denied" in line for line in lines)
    assert "3 mapped, 0 native, 3 denied" in result.stdout


@pytest.mark.parametrize("form", ["image.tar", "oci"])
def test_a_mapped_path_runs_its_entry_with_the_image_root_at_slash(tools, form):
    _, out, _ = tools
    result = megavisor("run-image", *TRUST, str(out / form), "/usr/bin/lines", "-l", "/etc/motd")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "/etc/motd"]
    piped = megavisor("run-image", *TRUST, str(out / form), "/bin/count", "-w", stdin="a b c\n")
    assert piped.stdout.strip() == "3", piped.stderr


def test_the_whiteout_hid_the_lower_file(tools):
    _, out, _ = tools
    result = megavisor("run-image", *TRUST, str(out / "oci"), "/bin/wc", "-c", "/etc/secret")
    assert result.returncode != 0
    assert "secret" in result.stderr


def test_denied_and_unlisted_paths_exit_126_with_eacces(tools):
    _, out, outcome = tools
    sha = outcome["map"]["files"]["/bin/id"]["sha256"]
    denied = megavisor("run-image", *TRUST, str(out / "oci"), "/bin/id")
    assert denied.returncode == 126
    assert f"EACCES: /bin/id (sha256 {sha}) is not in the image map" in denied.stderr
    script = megavisor("run-image", *TRUST, str(out / "oci"), "/etc/motd")
    assert script.returncode == 126, "a file that is not executable is not in the map"
    assert "EACCES: /etc/motd (sha256 " in script.stderr and "is not in the image map" in script.stderr
    missing = megavisor("run-image", *TRUST, str(out / "oci"), "/bin/nothing")
    assert missing.returncode == 127 and "not in the image" in missing.stderr


def unpacked_root(image_tar: Path, out: Path, root: Path) -> Path:
    """The original image's layers applied by Python's tarfile, with the map beside them:
    an unpacked root that `run-image` takes as is."""
    with tarfile.open(image_tar) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        for member in manifest[0]["Layers"]:
            with tarfile.open(fileobj=tar.extractfile(member)) as layer:
                layer.extractall(root, filter="tar")
    (root / ".megavisor").mkdir()
    for name in ["image-map.json", "image-map.json.sig"]:
        shutil.copy(out / name, root / ".megavisor" / name)
    return root


def test_a_binary_overwritten_after_mapping_is_refused(tools, tmp_path):
    image, out, _ = tools
    root = unpacked_root(image, out, tmp_path / "root")
    ok = megavisor("run-image", *TRUST, str(root), "/bin/wc", "-l", "/etc/motd")
    assert ok.returncode == 0, ok.stderr
    (root / "bin" / "wc").write_bytes(Path("/usr/bin/id").read_bytes())
    swapped = megavisor("run-image", *TRUST, str(root), "/bin/count")
    assert swapped.returncode == 126
    assert "is not in the image map" in swapped.stderr


def test_a_changed_or_foreign_map_is_refused(tools, tmp_path):
    image, out, _ = tools
    root = unpacked_root(image, out, tmp_path / "root")
    map_file = root / ".megavisor" / "image-map.json"
    text = map_file.read_text()
    map_file.write_text(text.replace('"denied"', '{"entry": "cat"}', 1))
    edited = megavisor("run-image", *TRUST, str(root), "/bin/id")
    assert edited.returncode != 0 and "bad_signature" in edited.stderr
    assert "does not verify" in edited.stderr
    map_file.write_text(text)
    other = megavisor(
        "run-image", "--bundle", str(BUILD / "test-bundle"), "--trusted-key", str(KEY) + ".pub",
        str(root), "/bin/wc",
    )
    assert other.returncode == 126
    assert "the image map was made for bundle \"default\"" in other.stderr


def test_an_image_that_was_not_recompiled_is_refused(tools):
    image, _, _ = tools
    result = megavisor("run-image", *TRUST, str(image), "/bin/wc")
    assert result.returncode == 126 and "has no image map" in result.stderr


def test_an_operator_map_names_entries_by_path_and_by_digest(tmp_path):
    busybox_like = {"path": "bin/busybox", "copy": "/usr/bin/id"}
    image = build_image(
        tmp_path / "oci",
        [[busybox_like, {"path": "bin/echo", "symlink": "busybox"},
          {"path": "bin/sh", "copy": "/bin/dash"}, {"path": "bin/true", "copy": "/bin/true"}]],
        fmt="oci",
    )
    dash_sha = hashlib.sha256(Path("/bin/dash").read_bytes()).hexdigest()
    mapfile = tmp_path / "map.toml"
    mapfile.write_text(
        '[paths]\n"/bin/echo" = { entry = "echo" }\n"/bin/true" = "denied"\n'
        f'[digests]\n"{dash_sha}" = "native"\n'
    )
    result = recompile(image, tmp_path / "out", "--map", str(mapfile), "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["map"]["files"]
    assert files["/bin/echo"]["run"] == {"entry": "echo"}
    assert files["/bin/busybox"]["run"] == "denied"
    assert files["/bin/sh"]["run"] == "native"
    assert files["/bin/true"]["run"] == "denied", "the path wins over the originals"
    echo = megavisor("run-image", *TRUST, str(tmp_path / "out" / "oci"), "/bin/echo", "hi")
    assert echo.returncode == 0 and echo.stdout == "hi\n", echo.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[paths]\n"/bin/echo" = { entry = "no-such-tool" }\n')
    refused = recompile(image, tmp_path / "bad", "--map", str(bad))
    assert refused.returncode != 0 and "no-such-tool (named by the map file)" in refused.stderr


def test_the_fleet_digests_run_natively(tmp_path):
    image = build_image(tmp_path / "img.tar", [[{"path": "bin/sh", "copy": "/bin/dash"},
                                                {"path": "bin/id", "copy": "/usr/bin/id"}]])
    dash_sha = hashlib.sha256(Path("/bin/dash").read_bytes()).hexdigest()
    id_sha = hashlib.sha256(Path("/usr/bin/id").read_bytes()).hexdigest()
    result = recompile(image, tmp_path / "out", "--allow-digest", dash_sha, "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["map"]["files"]
    assert files["/bin/sh"]["run"] == "native" and files["/bin/id"]["run"] == "denied"
    fleet = tmp_path / "allowlist"
    fleet.write_text(f"# the fleet\nsha256:{id_sha}\n/usr/bin/env\n")
    result = recompile(image, tmp_path / "out2", "--allowlist", str(fleet), "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["map"]["files"]
    assert files["/bin/id"]["run"] == "native", "the allowlist file's digests count"
    assert files["/bin/sh"]["run"] == "denied"


def test_a_tampered_layer_is_refused_naming_it(tmp_path):
    image = build_image(tmp_path / "img.tar", TOOLS_LAYERS)
    data = bytearray(image.read_bytes())
    offset = data.index(b"one\ntwo\nthree\n")
    data[offset] = ord("X")
    image.write_bytes(bytes(data))
    result = recompile(image, tmp_path / "out")
    assert result.returncode != 0
    assert "hash mismatch for" in result.stderr and "layer.tar" in result.stderr


def test_a_hostile_layer_is_refused_naming_the_entry(tmp_path):
    image = build_image(tmp_path / "img.tar", [[{"path": "../../escaped", "text": "x"}]])
    result = recompile(image, tmp_path / "out")
    assert result.returncode != 0
    assert 'entry "../../escaped" would land outside the root' in result.stderr
    device = build_image(tmp_path / "dev.tar", [[{"path": "dev/mem", "char": [1, 1]}]])
    result = recompile(device, tmp_path / "out2")
    assert result.returncode != 0 and '"dev/mem" is a device file' in result.stderr


def test_gzip_layers_of_an_oci_layout_unpack(tmp_path):
    image = build_image(tmp_path / "oci", TOOLS_LAYERS, fmt="oci")
    result = recompile(image, tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["mapped"] == 3


BUSYBOX = Path("/bin/busybox")
# An image of a static busybox (its shell and cat are links to it) and the host's id.
NATIVE_LAYERS = [[
    {"path": "bin/busybox", "copy": str(BUSYBOX)},
    {"path": "bin/sh", "symlink": "busybox"},
    {"path": "bin/cat", "symlink": "/bin/busybox"},
    {"path": "usr/bin/id", "copy": "/usr/bin/id"},
    {"path": "etc/motd", "text": "x\ny\n"},
]]


def native_image(tmp_path):
    """The busybox image and busybox's digest, where the sandbox can run (else skipped)."""
    if os.geteuid() != 0 or not BUSYBOX.is_file():
        reason = "needs root (the sandbox) and a static busybox (make image-test installs it)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    image = build_image(tmp_path / "native.tar", NATIVE_LAYERS)
    return image, hashlib.sha256(BUSYBOX.read_bytes()).hexdigest()


def test_a_native_path_runs_in_the_sandbox_behind_the_exec_gate(tmp_path):
    image, busybox = native_image(tmp_path)
    result = recompile(image, tmp_path / "out", "--allow-digest", busybox, "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["map"]["files"]
    assert files["/bin/sh"]["run"] == "native" and files["/usr/bin/id"]["run"] == "denied"
    ran = megavisor("run-image", *TRUST, str(tmp_path / "out" / "oci"), "/bin/sh", "-c",
                    "echo hi; cat /etc/motd; /usr/bin/id; echo rc=$?")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hi\nx\ny\nrc=126\n", "busybox dispatched on its name; id refused"
    assert "/usr/bin/id: Permission denied" in ran.stderr


def test_a_map_that_the_image_made_a_symlink_is_refused(tools, tmp_path):
    image, out, _ = tools
    root = unpacked_root(image, out, tmp_path / "root")
    map_file = root / ".megavisor" / "image-map.json"
    map_file.unlink()
    # A later layer could point the map at any file of the host; it is read in the image.
    map_file.symlink_to("/etc/passwd")
    result = megavisor("run-image", *TRUST, str(root), "/bin/wc")
    assert result.returncode == 126, result.stderr
    assert "image-map.json" in result.stderr


def test_a_docker_save_tarball_with_a_linked_layer_unpacks(tmp_path):
    """`docker save` stores a layer two images share once and links the other to it."""
    image = build_image(tmp_path / "img.tar", TOOLS_LAYERS)
    linked = tmp_path / "linked.tar"
    with tarfile.open(image) as src, tarfile.open(linked, "w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))
        first = manifest[0]["Layers"][0]
        for member in src.getmembers():
            if member.name == first:
                moved = tarfile.TarInfo("shared/layer.tar")
                moved.size = member.size
                dst.addfile(moved, src.extractfile(member))
                link = tarfile.TarInfo(first)
                link.type = tarfile.SYMTYPE
                link.linkname = "../shared/layer.tar"
                dst.addfile(link)
            else:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    result = recompile(linked, tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["mapped"] == 3


def test_the_fleet_allowlist_takes_back_a_native_path(tmp_path):
    image, busybox = native_image(tmp_path)
    assert recompile(image, tmp_path / "out", "--allow-digest", busybox).returncode == 0
    fleet = tmp_path / "allowlist"
    fleet.write_text(f"sha256:{busybox}\n")
    oci = str(tmp_path / "out" / "oci")
    listed = megavisor("run-image", *TRUST, "--allowlist", str(fleet), oci, "/bin/sh", "-c",
                       "echo listed")
    assert listed.returncode == 0 and listed.stdout == "listed\n", listed.stderr
    fleet.write_text("# busybox revoked\n")
    revoked = megavisor("run-image", *TRUST, "--allowlist", str(fleet), oci, "/bin/sh", "-c",
                        "echo revoked")
    assert revoked.returncode == 126
    assert "the fleet's allowlist does not list it" in revoked.stderr


def test_an_image_past_its_size_limit_is_refused(tmp_path):
    image = build_image(tmp_path / "big.tar", [[
        {"path": "a", "text": "x" * 3000},
        {"path": "b", "text": "y" * 3000},
    ]])
    result = recompile(image, tmp_path / "out", "--max-image-size", "5000")
    assert result.returncode != 0
    assert '"b" takes the image past the limit of 5000 bytes' in result.stderr
