"""Golden images (specs/vectors/images): described trees must pack to the recorded digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from erofsgen import open_image
from erofsgen.model import BytesData, Device, Directory, Fifo, File, Metadata, Node, Socket, Symlink
from erofsgen.writer import WriteOptions, write_image
from tests.test_format import Record, load_vectors

IMAGES = Path(__file__).resolve().parent.parent / "specs" / "vectors" / "images"
CASES = [(path, line, rec) for path in sorted(IMAGES.glob("*.txt")) for line, rec in load_vectors(path)]


def _hex(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


def _data(arg: str) -> bytes:
    if arg.startswith("*"):
        count, byte = arg[1:].split(":")
        return bytes([int(byte, 16)]) * int(count)
    return _hex(arg)


def _leaf(kind: str, meta: Metadata, arg: str) -> Node:
    if kind == "file":
        return File(meta, BytesData(_data(arg)))
    if kind == "symlink":
        return Symlink(meta, arg.encode())
    if kind in ("chr", "blk"):
        major, minor = arg.split(":")
        return Device(meta, kind == "blk", int(major), int(minor))
    if kind == "fifo":
        return Fifo(meta)
    if kind == "sock":
        return Socket(meta)
    raise ValueError(f"unknown entry type {kind!r}")


def build_tree(rec: Record) -> Directory:
    nodes: dict[str, Node] = {}
    root: Directory | None = None
    for line in rec["entry"]:
        kind, path, *rest = line.split()
        if kind == "link":
            node = nodes[rest[0]]
        else:
            mode, uid, gid, mtime_ns, arg = rest
            meta = Metadata(int(mode, 8), int(uid), int(gid), int(mtime_ns))
            node = Directory(meta) if kind == "dir" else _leaf(kind, meta, arg)
        if path == "/":
            assert isinstance(node, Directory)
            root = node
        else:
            parent_path, _, name = path.rpartition("/")
            parent = nodes[parent_path or "/"]
            assert isinstance(parent, Directory)
            parent.children[name.encode()] = node
        nodes[path] = node
    for line in rec.get("xattr", []):
        path, name, value = line.split()
        nodes[path].meta.xattrs[name.encode()] = _hex(value)
    assert root is not None
    return root


def options(rec: Record) -> WriteOptions:
    return WriteOptions(
        block_size=int(rec["block_size"][0]),
        xattr_share_threshold=int(rec.get("share", ["2"])[0]),
        xattr_prefixes=tuple(p.encode() for p in rec.get("prefix", [])),
    )


@pytest.mark.parametrize(("path", "line", "rec"), CASES, ids=[f"{p.stem}:{n}" for p, n, _ in CASES])
def test_golden_image(path: Path, line: int, rec: Record, tmp_path: Path) -> None:
    tree = build_tree(rec)
    image = tmp_path / "golden.img"
    write_image(tree, image, options(rec))
    data = image.read_bytes()
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (rec["sha256"][0], int(rec["size"][0])), (
        f"{path.name}:{line}: the writer's output changed; if on purpose, update the vector"
    )
    with open_image(image) as img:  # and the image reads back as described
        for entry in rec["entry"]:
            kind, where, *rest = entry.split()
            if kind == "file":
                assert img.read_bytes(where) == _data(rest[-1])
