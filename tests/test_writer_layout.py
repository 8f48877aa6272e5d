"""Layout decisions that are easy to get wrong: root placement, file-object windows, symlinked paths."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erofsgen import ImageBuilder, open_image
from erofsgen.model import BytesData, Directory, File, FileObjectData, Metadata, PathData, StreamData
from erofsgen.reader.check import check_image
from erofsgen.writer import WriteOptions, write_image
from tests.support.kernel import MountImage


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


@dataclass(frozen=True)
class DataFirstCase:
    """Files at block edges, early (path-backed, 4+ blocks) and late, around a root of any size."""

    block_size: int
    files: list[tuple[int, str, int]]  # size, kind of source, xattr value length
    tiny: int  # small records, more than block 0's rest can hold
    root_xattr: int
    inline: bool
    prefix: bool


@st.composite
def data_first_cases(draw: st.DrawFn) -> DataFirstCase:
    bs = draw(st.sampled_from([512, 1024, 2048, 4096]))
    edges = [0, 1, bs - 1, bs, bs + 1, 3 * bs + 1, 4 * bs - 1, 4 * bs, 4 * bs + 1, 6 * bs - 1, 6 * bs - 33]
    kinds = st.sampled_from(["path", "bytes", "stream"])
    files = draw(st.lists(st.tuples(st.sampled_from(edges), kinds, st.integers(0, 300)), max_size=10))
    return DataFirstCase(
        block_size=bs,
        files=files,
        tiny=draw(st.integers(0, 300)),
        root_xattr=draw(st.sampled_from([0, 10, 900, 2000, 5000])),
        inline=draw(st.booleans()),
        prefix=draw(st.booleans()),
    )


def _data_first_tree(case: DataFirstCase, src: Path) -> tuple[Directory, dict[str, bytes]]:
    root_xattrs = {b"user.big": b"v" * case.root_xattr} if case.root_xattr else {}
    root = Directory(Metadata(0o755, xattrs=root_xattrs))
    sub = Directory(Metadata(0o755, xattrs={b"trusted.overlay.opaque": b"y"}))
    root.children[b"sub"] = sub
    expected: dict[str, bytes] = {}
    for i, (size, kind, xattr_len) in enumerate(case.files):
        data = bytes((i * 7 + k) % 251 for k in range(size))
        xattrs = {b"trusted.overlay.x%d" % (i % 3): b"q" * xattr_len, b"user.s": b"w"} if xattr_len else {}
        if kind == "path":
            (src / f"f{i}").write_bytes(data)
            source: PathData | BytesData | StreamData = PathData(str(src / f"f{i}"), size)
        elif kind == "bytes":
            source = BytesData(data)
        else:
            source = StreamData(io.BytesIO(data), size)
        parent, where = (root, "") if i % 2 else (sub, "sub/")
        parent.children[b"f%d" % i] = File(Metadata(0o644, xattrs=xattrs), source)
        expected[f"{where}f{i}"] = data
    for j in range(case.tiny):
        xattrs = {b"user.t": b"%d" % (j % 4)} if j % 3 else {}
        sub.children[b"t%04d" % j] = File(Metadata(0o600, xattrs=xattrs), BytesData(b"x" * (j % 70)))
        expected[f"sub/t{j:04d}"] = b"x" * (j % 70)
    return root, expected


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=data_first_cases())
def test_data_first_layouts_check_and_mount(case: DataFirstCase, kernel_mount: MountImage) -> None:
    """Early and late files at block edges, block 0 full or nearly empty, every block size: the
    image checks clean and the kernel reads every byte and the root's xattr."""
    work = Path(tempfile.mkdtemp(prefix="erofsgen-datafirst-"))
    try:
        root, expected = _data_first_tree(case, work)
        prefixes = (b"trusted.overlay.",) if case.prefix else ()
        options = WriteOptions(block_size=case.block_size, inline_data=case.inline, xattr_prefixes=prefixes)
        image = work / "img"
        summary = write_image(root, image, options)
        assert image.stat().st_size == summary.blocks * case.block_size
        with open_image(image) as img:
            assert check_image(img, data=True) == []
            assert all(img.read_bytes("/" + path) == data for path, data in expected.items())
        with kernel_mount(image) as mnt:
            for path, data in expected.items():
                assert (mnt / path).read_bytes() == data, path
            if case.root_xattr:
                assert os.getxattr(mnt, "user.big") == b"v" * case.root_xattr
    finally:
        shutil.rmtree(work)
