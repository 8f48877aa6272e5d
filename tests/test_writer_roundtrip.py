"""Random trees built in memory → image → kernel mount, compared field by field."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erofsgen.model import (
    BytesData,
    Device,
    Directory,
    Fifo,
    File,
    Metadata,
    Node,
    Socket,
    Symlink,
    full_mode,
    iter_tree,
)
from erofsgen.writer import WriteOptions, write_image
from erofsgen.writer.placement import pack_records
from tests.support.compare import assert_same_tree
from tests.support.kernel import MountImage
from tests.support.snapshot import KIND_OF_MODE, Entry, TreeSnapshot, image_snapshot, snapshot

BLOCK_EDGES = [0, 1, 31, 32, 511, 512, 513, 1023, 1024, 2047, 2048, 4095, 4096, 4097, 8191, 8192, 8193]

names = (
    st.binary(min_size=1, max_size=255)
    .filter(lambda n: b"/" not in n and b"\0" not in n)
    .filter(lambda n: n not in (b".", b".."))
)
xattr_names = st.sampled_from([b"user.", b"trusted.", b"security."]).flatmap(
    lambda p: st.binary(min_size=1, max_size=40).filter(lambda s: b"\0" not in s).map(lambda s: p + s)
)
metadata = st.builds(
    Metadata,
    mode=st.integers(0, 0o7777),
    uid=st.one_of(st.just(0), st.integers(0, 2**32 - 2)),
    gid=st.one_of(st.just(0), st.integers(0, 2**32 - 2)),
    mtime_ns=st.one_of(st.just(10**18), st.integers(-(2**40) * 10**9, 2**40 * 10**9)),
    xattrs=st.dictionaries(xattr_names, st.binary(max_size=300), max_size=4),
)


@st.composite
def leaves(draw: st.DrawFn) -> Node:
    meta = draw(metadata)
    kind = draw(st.sampled_from(["file", "file", "file", "symlink", "chr", "blk", "fifo", "sock"]))
    if kind != "file":  # the kernel keeps user.* xattrs for regular files and directories only
        meta.xattrs = {k: v for k, v in meta.xattrs.items() if not k.startswith(b"user.")}
    if kind == "file":
        size = draw(st.one_of(st.sampled_from(BLOCK_EDGES), st.integers(0, 20000)))
        seed = draw(st.integers(0, 2**32))
        return File(meta, BytesData(_content(seed, size)))
    if kind == "symlink":
        return Symlink(meta, draw(st.binary(min_size=1, max_size=4095).filter(lambda t: b"\0" not in t)))
    if kind in ("chr", "blk"):
        return Device(meta, kind == "blk", draw(st.integers(0, 4095)), draw(st.integers(0, 2**20 - 1)))
    return Fifo(meta) if kind == "fifo" else Socket(meta)


def _content(seed: int, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return out[:size]


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> Directory:
    directory = Directory(draw(metadata))
    made: list[Node] = []
    for name in draw(st.lists(names, max_size=8, unique=True)):
        if depth < 3 and draw(st.integers(0, 4)) == 0:
            directory.children[name] = draw(trees(depth + 1))
        elif made and draw(st.integers(0, 5)) == 0:
            directory.children[name] = draw(st.sampled_from(made))  # a hard link
        else:
            node = draw(leaves())
            made.append(node)
            directory.children[name] = node
    return directory


def expected_snapshot(root: Directory) -> TreeSnapshot:
    """What a mounted image of `root` must show."""
    entries: dict[str, Entry] = {}
    paths_of: dict[int, list[str]] = {}
    for path, node in iter_tree(root):
        paths_of.setdefault(id(node), []).append(os.fsdecode(path) or ".")
    for path, node in iter_tree(root):
        rel = os.fsdecode(path) or "."
        entries[rel] = _entry(node, len(paths_of[id(node)]))
    links = frozenset(frozenset(p) for p in paths_of.values() if len(p) > 1 and entries[p[0]].kind != "dir")
    return TreeSnapshot(entries, links)


def _entry(node: Node, names: int) -> Entry:
    mode = full_mode(node)
    kind = KIND_OF_MODE[stat.S_IFMT(mode)]
    size = None
    if isinstance(node, File):
        assert isinstance(node.data, BytesData)
        size = node.data.size
    elif isinstance(node, Symlink):
        size = len(node.target)
    elif kind != "dir":
        size = 0
    nlink = (
        2 + sum(isinstance(c, Directory) for c in node.children.values())
        if isinstance(node, Directory)
        else names
    )
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(mode),
        uid=node.meta.uid,
        gid=node.meta.gid,
        nlink=nlink,
        size=size,
        mtime_ns=node.meta.mtime_ns,
        rdev=(node.major, node.minor) if isinstance(node, Device) else None,
        target=node.target if isinstance(node, Symlink) else None,
        sha256=hashlib.sha256(node.data.data).hexdigest()
        if isinstance(node, File) and isinstance(node.data, BytesData)
        else None,
        xattrs=tuple(sorted((os.fsdecode(k), v) for k, v in node.meta.xattrs.items())),
    )


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=trees(), block_size=st.sampled_from([4096, 4096, 512, 1024, 2048]))
def test_random_trees_mount_exactly(
    tree: Directory, block_size: int, tmp_path: Path, kernel_mount: MountImage
) -> None:
    image = tmp_path / "random.img"
    write_image(tree, image, WriteOptions(block_size=block_size))
    try:
        with kernel_mount(image) as mnt:
            assert_same_tree(expected_snapshot(tree), snapshot(mnt))
    finally:
        image.unlink()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=trees(), block_size=st.sampled_from([4096, 512, 1024, 2048]))
def test_random_trees_read_back_exactly(tree: Directory, block_size: int, tmp_path: Path) -> None:
    """The same round trip through erofsgen's reader: runs without root or a kernel."""
    image = tmp_path / "random.img"
    write_image(tree, image, WriteOptions(block_size=block_size))
    try:
        assert_same_tree(expected_snapshot(tree), image_snapshot(image))
    finally:
        image.unlink()


record_lists = st.lists(
    st.tuples(st.integers(32, 4096), st.booleans()).map(lambda r: (r[0] // 4 * 4, r[1])),
    min_size=1,
    max_size=300,
)


@given(
    records=record_lists,
    block_size=st.sampled_from([512, 1024, 2048, 4096]),
    shared=st.integers(0, 9000),
    front_used=st.integers(0, 4096),
    data_blocks=st.integers(0, 3),
)
def test_packing_keeps_inline_records_inside_one_block(
    records: list[tuple[int, bool]], block_size: int, shared: int, front_used: int, data_blocks: int
) -> None:
    """Records, the front gap of the root's block and the shared area never overlap; tails stay whole."""
    records = [(min(size, block_size), rigid) for size, rigid in records]
    shared = shared // 4 * 4
    front_start = 1152 + front_used % (block_size - 1152 % block_size)
    front_end = (1152 // block_size + 1) * block_size
    meta_start = front_end + data_blocks * block_size  # the data area lies between
    sizes = [s for s, _ in records]
    packed = pack_records(
        sizes, [r for _, r in records], meta_start, block_size, shared, (front_start, front_end)
    )
    spans = sorted((off, off + size) for off, (size, _) in zip(packed.offsets, records, strict=True))
    if shared:
        spans = sorted([*spans, (packed.shared_offset, packed.shared_offset + shared)])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "records overlap"
    for off, (size, rigid) in zip(packed.offsets, records, strict=True):
        in_front = front_start <= off and off + size <= front_end
        assert off % 32 == 0 and (in_front or off >= meta_start) and off + size <= packed.end
        if rigid:
            assert off // block_size == (off + size - 1) // block_size, "inline record crosses a block"
    assert packed.shared_offset % block_size == 0 and packed.shared_offset >= meta_start
