"""Layout decisions that are easy to get wrong: root placement, file-object windows, symlinked paths."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from erofsgen import ImageBuilder, open_image
from erofsgen.model import BytesData, Directory, File, FileObjectData, Metadata, PathData
from erofsgen.writer import WriteOptions, write_image


def test_root_without_inline_tail_still_gets_the_first_nid(tmp_path: Path) -> None:
    # A root whose record cannot hold its tail inline (a large xattr) among many records that
    # must stay inside one block each: the root must still be placed first.
    root = Directory(Metadata(0o755, xattrs={b"user.big": b"v" * 4200}))
    sub = Directory(Metadata(0o755))
    root.children[b"sub"] = sub
    for i in range(600):
        sub.children[b"f%03d" % i] = File(Metadata(), BytesData(bytes([i % 251]) * 4000))
    summary = write_image(root, tmp_path / "img")
    assert summary.root_nid == (1152 + 31) // 32
    with open_image(tmp_path / "img") as img:
        assert img.xattrs("/")["user.big"] == b"v" * 4200
        assert img.read_bytes("/sub/f599") == bytes([599 % 251]) * 4000


@pytest.mark.parametrize(("block_size", "size"), [(512, 1500), (4096, 4096 + 3000), (4096, 2 * 4096 + 100)])
def test_data_between_block_0_and_the_metadata_is_kept(tmp_path: Path, block_size: int, size: int) -> None:
    """Records in block 0 and after the data area: the data between them is not zero-filled."""
    data = bytes(range(251)) * (size // 251 + 1)
    extended_root = Metadata(0o755, gid=65536)  # a 64-byte core leaves block 0 too little room
    root = Directory(extended_root, {b"f": File(Metadata(0o644), BytesData(data[:size]))})
    write_image(root, tmp_path / "img", WriteOptions(block_size=block_size))
    with open_image(tmp_path / "img") as img:
        assert img.read_bytes("/f") == data[:size]


def test_early_files_follow_the_root_in_inode_order(tmp_path: Path) -> None:
    """Path-backed files of 4+ blocks are placed from block 1 in inode order, before the rest."""
    src = tmp_path / "src"
    src.mkdir()
    sizes = {b"b": 5 * 4096 + 10, b"a": 4 * 4096, b"c": 3 * 4096, b"d": 9 * 4096 + 4000}
    root = Directory(Metadata(0o755))
    for name, size in sizes.items():
        (src / name.decode()).write_bytes(bytes([name[0]]) * size)
        root.children[name] = File(Metadata(0o644), PathData(str(src / name.decode()), size))
    write_image(root, tmp_path / "img")
    with open_image(tmp_path / "img") as img:
        starts = {
            name: next(img.segments_nid(img.lookup(f"/{name.decode()}"))).physical // 4096 for name in sizes
        }
        for name, size in sizes.items():
            assert img.read_bytes(f"/{name.decode()}") == bytes([name[0]]) * size
    assert starts[b"a"] == 1 and starts[b"b"] == 5  # a (4 blocks), then b (5 whole blocks + tail inline)
    assert starts[b"d"] == 5 + 5  # after b; its last 4000 bytes cannot be inline
    assert starts[b"c"] > starts[b"d"]  # 3 blocks: not early, after the early files


def test_file_object_windows_of_one_stream_each_read_their_own_bytes(tmp_path: Path) -> None:
    """512 files that are windows of one shared stream (tar-like) each get their own range."""
    chunks = [bytes([i % 256]) * 10000 for i in range(512)]
    stream = io.BytesIO(b"".join(chunks) + b"trailing data after the last window")
    root = Directory(Metadata(0o755))
    for i in range(len(chunks)):
        root.children[b"f%03d" % i] = File(Metadata(), FileObjectData(stream, i * 10000, 10000))
    write_image(root, tmp_path / "img")
    with open_image(tmp_path / "img") as img:
        for i, chunk in enumerate(chunks):
            assert img.read_bytes(f"/f{i:03d}") == chunk


def test_builder_fileobj_window_and_symlinked_path(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_bytes(b"through a link\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with ImageBuilder(tmp_path / "img") as b:
        b.add_file("window", fileobj=io.BytesIO(b"0123456789"), size=4)
        b.add_file("linked", path=link)
    with open_image(tmp_path / "img") as img:
        assert img.read_bytes("/window") == b"0123"
        assert img.read_bytes("/linked") == b"through a link\n"
    assert os.readlink(link) == str(target)


def test_long_prefixes_are_chosen_where_they_save_space() -> None:
    from erofsgen.writer.xattrs import choose_long_prefixes

    many = [{b"trusted.overlay.opaque": b"y", b"user.a": b"1"} for _ in range(20)]
    assert choose_long_prefixes(many, [], [], 128) == [b"trusted.overlay."]
    # Once: the record costs more than it saves.
    assert choose_long_prefixes(many[:1], [], [], 128) == []
    # Shared entries are stored once, so they count once.
    shared = [(b"trusted.overlay.opaque", b"y")]
    assert choose_long_prefixes(many, shared, [], 128) == []
    # Nested in a given prefix, or past the limit: not chosen.
    assert choose_long_prefixes(many, [], [b"trusted.overlay.x."], 128) == []
    assert choose_long_prefixes(many, [], [], 0) == []
    # Stems must leave part of the name, and ACL names have no stems.
    assert choose_long_prefixes([{b"user.abcdefgh.": b""}] * 20, [], [], 128) == []
    assert choose_long_prefixes([{b"system.posix_acl_access": b"\x02\0\0\0"}] * 20, [], [], 128) == []
