"""Writes CPython's standard library as one zip, the `python` tool's data file:

    python3 guest/python/stdlib.py LIB_DIR OUT.zip

LIB_DIR is the wasm build's lib/python3.11. Only source files go in, stored uncompressed
(zipimport then needs no zlib) with fixed timestamps, in sorted order, so the same input
always gives the same bytes, and the same digests in the manifest. Tests, GUI and
packaging tools that cannot run in the sandbox are left out.
"""

import os
import sys
import zipfile

LEFT_OUT = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "__pycache__", "site-packages", "lib-dynload", "venv", "distutils",
}
TIMESTAMP = (2024, 1, 1, 0, 0, 0)


def sources(root):
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in LEFT_OUT and not d.startswith("config-")
        )
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                yield path, os.path.relpath(path, root)


def main(root, out):
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for path, name in sources(root):
            info = zipfile.ZipInfo(name, TIMESTAMP)
            info.external_attr = 0o644 << 16
            with open(path, "rb") as source:
                archive.writestr(info, source.read())
    os.replace(tmp, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
