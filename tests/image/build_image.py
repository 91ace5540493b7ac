#!/usr/bin/env python3
"""Writes a container image for the tests: a `docker save` tarball or an OCI image layout.

Each --layer is a JSON list of entries, applied in order:
  {"path": "bin/wc", "copy": "/usr/bin/wc"}             a regular file copied from the host
  {"path": "etc/motd", "text": "hi\\n", "mode": 420}     a regular file with this content
  {"path": "bin/ls", "symlink": "busybox"}              a symlink
  {"path": "bin/cat", "hardlink": "bin/busybox"}        a hard link
  {"path": "opt", "dir": true}                          a directory
  {"path": "dev/null", "char": [1, 3]}                  a character device
Layers are gzip-compressed in OCI layouts (unless --uncompressed) and plain in tarballs,
as the two tools that write them do.

    build_image.py --format docker --name tools:1 --out tools.tar --layer '[...]' ...
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def layer_tar(entries):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["path"])
            info.mtime = 0
            info.mode = entry.get("mode", 0o755)
            data = None
            if "copy" in entry:
                with open(entry["copy"], "rb") as f:
                    data = f.read()
            elif "text" in entry:
                data = entry["text"].encode()
                info.mode = entry.get("mode", 0o644)
            elif "symlink" in entry:
                info.type = tarfile.SYMTYPE
                info.linkname = entry["symlink"]
            elif "hardlink" in entry:
                info.type = tarfile.LNKTYPE
                info.linkname = entry["hardlink"]
            elif "dir" in entry:
                info.type = tarfile.DIRTYPE
            elif "char" in entry:
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = entry["char"]
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def config(diff_ids, cmd):
    return json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]},
        "history": [{"created_by": "build_image.py"} for _ in diff_ids],
    }, sort_keys=True).encode()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_docker(out, name, layers, cmd):
    diff_ids = [sha256(layer) for layer in layers]
    cfg = config(diff_ids, cmd)
    with tarfile.open(out, "w") as tar:
        members = []
        for digest, layer in zip(diff_ids, layers):
            add(tar, f"{digest}/layer.tar", layer)
            members.append(f"{digest}/layer.tar")
        add(tar, sha256(cfg) + ".json", cfg)
        manifest = [{"Config": sha256(cfg) + ".json", "RepoTags": [name], "Layers": members}]
        add(tar, "manifest.json", json.dumps(manifest).encode())


def write_oci(out, name, layers, cmd, compress):
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def blob(data):
        digest = sha256(data)
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    diff_ids = [sha256(layer) for layer in layers]
    descriptors = []
    for layer in layers:
        stored = gzip.compress(layer, mtime=0) if compress else layer
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descriptors.append({"mediaType": media, **blob(stored)})
    cfg = {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config(diff_ids, cmd))}
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg,
        "layers": descriptors,
    }).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **blob(manifest),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=["docker", "oci"], required=True)
    parser.add_argument("--name", default="megavisor-test:latest")
    parser.add_argument("--out", required=True)
    parser.add_argument("--layer", action="append", default=[], type=json.loads)
    parser.add_argument("--cmd", default="[]", type=json.loads)
    parser.add_argument("--uncompressed", action="store_true")
    args = parser.parse_args()
    layers = [layer_tar(entries) for entries in args.layer]
    if args.format == "docker":
        write_docker(args.out, args.name, layers, args.cmd)
    else:
        write_oci(args.out, args.name, layers, args.cmd, not args.uncompressed)


if __name__ == "__main__":
    main()
