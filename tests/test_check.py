"""`check`: clean images pass; each kind of damage is reported once, where it is, never raising.

Images are small trees packed by erofsgen (and mkfs.erofs where it writes something erofsgen
does not: compressed files, chunk indexes with a blob device). Damage is applied at offsets
found with the structural dump, and the superblock checksum is recomputed afterwards so the
damage itself is what the checker sees.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.errors import InvalidInputError
from erofsgen.format.constants import EROFS_SUPER_OFFSET
from erofsgen.format.dirent import pack_dirent_block
from erofsgen.format.superblock import CHECKSUM_OFFSET, checksum_length, sb_checksum
from erofsgen.reader.check import Problem, Severity, check_image, check_source, summarize
from erofsgen.reader.dirs import scan_block
from erofsgen.reader.dump import Structure, field_offset, iter_image
from tests.support.erofs_utils import ErofsUtils

BS = 4096


def small_tree(root: Path) -> Path:
    """Files with xattrs (one shared by three inodes), a symlink, a FIFO, a hard link, subdirs."""
    (root / "sub" / "inner").mkdir(parents=True)
    for name in ("aa", "ab", "ac"):
        (root / name).write_bytes(name.encode() * 50)
        os.setxattr(root / name, "user.shared", b"on three files")
    os.setxattr(root / "aa", "user.own", b"x" * 40)
    (root / "big").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "file").write_bytes(b"in sub\n")
    os.link(root / "aa", root / "sub" / "hard")
    os.symlink("aa", root / "link")
    os.mkfifo(root / "fifo")
    return root


def pack(src: Path, image: Path, *options: str) -> Path:
    assert cli_main(["pack", "--quiet", "-T", "1000", "-U", "clear", *options, str(src), str(image)]) == 0
    return image


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return pack(small_tree(tmp_path / "src"), tmp_path / "img")


def structures(path: Path, devices: tuple[str, ...] = ()) -> list[Structure]:
    with erofsgen.open_image(path, devices) as img:
        return [s for s in iter_image(img) if isinstance(s, Structure)]


def find(path: Path, kind: str, note: str | None = None, nid: int | None = None) -> Structure:
    for s in structures(path):
        if s.kind == kind and (note is None or s.note == note) and (nid is None or s.nid == nid):
            return s
    raise AssertionError(f"no {kind} {note} {nid}")


def nid_of(path: Path, name: str) -> int:
    with erofsgen.open_image(path) as img:
        return img.lookup(name)


def patch(path: Path, offset: int, data: bytes, *, fix_checksum: bool = True) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    if fix_checksum:
        end = EROFS_SUPER_OFFSET + checksum_length(BS)
        raw[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 4] = sb_checksum(bytes(raw[:end]), BS).to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def messages(path: Path, devices: Sequence[str] = (), *, data: bool = False) -> list[str]:
    return [str(p) for p in check_source(path, devices, data=data)]


def errors(path: Path, *, data: bool = False) -> list[str]:
    return [str(p) for p in check_source(path, data=data) if not p.is_warning]


def u16(v: int) -> bytes:
    return v.to_bytes(2, "little")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


# -------------------------------------------------------------------------------- clean images


def test_clean_images_pass(tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    for opts in (
        [],
        ["-b", "512"],
        ["-E", "force-inode-extended"],
        ["--xattr-prefix", "user.sh"],
        ["-x", "-1"],
    ):
        image = pack(src, tmp_path / ("img" + "".join(opts)), *opts)
        assert messages(image, data=True) == [], opts


@pytest.mark.parametrize("opts", [["-zlz4hc", "-Eztailpacking"], ["-zlz4", "-Elegacy-compress", "-C16384"]])
def test_clean_mkfs_images_pass(erofs_utils: ErofsUtils, tmp_path: Path, opts: list[str]) -> None:
    src = small_tree(tmp_path / "src")
    image = tmp_path / "img"
    erofs_utils.mkfs(image, src, "--quiet", *opts)
    assert messages(image, data=True) == []


def test_problem_text() -> None:
    p = Problem("bad thing", area="directory", nid=40, offset=0x520, path="/a\\nb")
    assert str(p) == "directory nid 40 /a\\nb @0x520: bad thing"
    w = Problem("odd", area="inode", severity=Severity.WARNING)
    assert str(w) == "warning: inode: odd" and w.is_warning
    assert str(Problem("bare")) == "bare"
    assert summarize([p, w, w]) == "1 problem, 2 warnings"


# -------------------------------------------------------------------------------- superblock


def test_checksum_mismatch(image: Path) -> None:
    patch(image, EROFS_SUPER_OFFSET + 64, b"LABEL", fix_checksum=False)
    found = errors(image)
    assert len(found) == 1 and "checksum" in found[0] and "does not match" in found[0]


@pytest.mark.parametrize(
    ("offset", "data", "expect"),
    [
        (12, bytes([20]), "blkszbits 20 out of range"),
        (90, bytes([1]), "dirblkbits 1 must be 0"),
        (13, bytes([255]), "sb_extslots 255 too large"),
        (80, u32(0x400), "unknown incompat feature bits 0x400"),
    ],
)
def test_superblock_fields(image: Path, offset: int, data: bytes, expect: str) -> None:
    patch(image, EROFS_SUPER_OFFSET + offset, data, fix_checksum=False)
    found = errors(image)
    assert any(expect in m for m in found), found
    assert cli_main(["check", "--quiet", str(image)]) == 1


def test_unsupported_features_are_unusable_input(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patch(image, EROFS_SUPER_OFFSET + 80, u32(0x80))  # 48BIT
    assert cli_main(["check", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("erofsgen: error:") and "cannot be checked" in err and "Traceback" not in err


def test_missing_file_and_truncation(tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", str(tmp_path / "nope")]) == 2
    assert "cannot open image" in capsys.readouterr().err
    short = tmp_path / "short"
    short.write_bytes(image.read_bytes()[:1100])
    with pytest.raises(InvalidInputError, match="1100 bytes, too short for a superblock"):
        errors(short)
    half = tmp_path / "half"
    half.write_bytes(image.read_bytes()[: 3 * BS])
    assert any("truncated" in m for m in errors(half))


def test_root_must_be_a_directory(image: Path) -> None:
    patch(image, EROFS_SUPER_OFFSET + 14, u16(nid_of(image, "aa")))
    assert any("root inode is not a directory" in m for m in errors(image))


# -------------------------------------------------------------------------------- directories


def dirent(image: Path, name: str) -> Structure:
    return find(image, "dirent", note=name)


def test_unsorted_names(image: Path) -> None:
    aa = dirent(image, "aa")
    name_aa = find(image, "directory block", nid=aa.nid).offset + aa.fields["nameoff"]
    patch(image, name_aa, b"ab")
    patch(image, name_aa + 2, b"aa")  # names swapped: "ab" now precedes "aa"
    found = errors(image)
    assert any("aa after ab: wrong dirent order" in m for m in found), found


def test_dirent_nameoff_rules(tmp_path: Path, image: Path) -> None:
    first = find(image, "dirent", note=".")
    copy = tmp_path / "copy"
    copy.write_bytes(image.read_bytes())
    patch(copy, field_offset(first, "nameoff"), u16(4))
    assert any("invalid dirent[0].nameoff 4" in m for m in errors(copy))
    # Names end where the next begins: moving a nameoff back makes the previous name negative.
    aa, ab = dirent(image, "aa"), dirent(image, "ab")
    copy.write_bytes(image.read_bytes())
    patch(copy, field_offset(ab, "nameoff"), u16(aa.fields["nameoff"] - 1))
    assert any("dirent 2: bad name length -1" in m for m in errors(copy))
    # Moving it forward lengthens the previous name and shortens this one: "aab", "b", "ac".
    patch(image, field_offset(ab, "nameoff"), u16(ab.fields["nameoff"] + 1))
    assert any("ac after b: wrong dirent order" in m for m in errors(image))


def test_slash_in_name(image: Path) -> None:
    link = dirent(image, "link")
    block = find(image, "directory block", nid=link.nid)
    patch(image, block.offset + link.fields["nameoff"] + 1, b"/")
    assert any("contains '/' or NUL" in m for m in errors(image))


def test_dot_entries(tmp_path: Path, image: Path) -> None:
    sub = nid_of(image, "sub")
    dotdot = find(image, "dirent", note="..", nid=sub)
    dot = find(image, "dirent", note=".", nid=sub)
    copy = tmp_path / "copy"
    copy.write_bytes(image.read_bytes())
    patch(copy, field_offset(dotdot, "nid"), nid_of(image, "sub/inner").to_bytes(8, "little"))
    assert any("'..' points to nid" in m for m in errors(copy))
    patch(image, field_offset(dot, "file_type"), bytes([1]))
    assert any("'.' has file_type 1" in m for m in errors(image))


def test_file_types(tmp_path: Path, image: Path) -> None:
    ab = dirent(image, "ab")
    copy = tmp_path / "copy"
    copy.write_bytes(image.read_bytes())
    patch(copy, field_offset(ab, "file_type"), bytes([7]))
    assert any("entry ab: file_type 7, but the inode is REG_FILE" in m for m in errors(copy))
    patch(image, field_offset(ab, "file_type"), bytes([9]))
    assert any("invalid file type 9" in m for m in errors(image))


def test_directory_loop(image: Path) -> None:
    inner = find(image, "dirent", note="inner")
    patch(image, field_offset(inner, "nid"), nid_of(image, "/").to_bytes(8, "little"))
    found = messages(image)
    assert any("/sub/inner names a directory reached before" in m for m in found), found
    # The loop does not make the walk go round: the check finishes with a bounded report.
    assert len(found) < 10


def test_scan_block_reports_instead_of_raising() -> None:
    good = pack_dirent_block([(b".", 1, 2), (b"..", 1, 2), (b"x", 2, 1)], 64)
    entries, problems = scan_block(good, BS)
    assert [e[0] for e in entries] == [b".", b"..", b"x"] and problems == []
    assert scan_block(good[:5], BS) == ([], [(0, "5 bytes cannot hold a dirent", True)])
    odd = bytearray(good)
    odd[8:10] = u16(37)
    _, problems = scan_block(bytes(odd), BS)
    assert problems[0] == (8, "dirent[0].nameoff 37 is not a multiple of 12", False)
    empty_name = pack_dirent_block([(b".", 1, 2), (b"..", 1, 2), (b"x", 2, 1)], 64)[:39] + bytes(25)
    assert scan_block(empty_name, BS)[1] == [(32, "dirent 2: bad name length 0", True)]
    bad_type = pack_dirent_block([(b".", 1, 2), (b"..", 1, 2), (b"x", 2, 9)], 64)
    assert scan_block(bad_type, BS)[1] == [(34, "dirent 2: invalid file type 9", False)]


# -------------------------------------------------------------------------------- inodes


def test_link_counts_are_warnings(tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nid = nid_of(image, "aa")
    core = find(image, "inode (compact)", nid=nid)
    patch(image, field_offset(core, "i_nb"), u16(7))
    sub = find(image, "inode (compact)", nid=nid_of(image, "sub"))
    patch(image, field_offset(sub, "i_nb"), u16(9))
    found = check_source(image)
    assert all(p.is_warning for p in found)
    texts = [str(p) for p in found]
    assert any("link count 7, but 2 directory entries name it" in t for t in texts), texts
    assert any("directory link count 9, expected 2 + 1 subdirectories" in t for t in texts), texts
    assert cli_main(["check", str(image)]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 2 and out.out.startswith("warning: ")
    assert "0 problems, 2 warnings" in out.err
    assert cli_main(["check", "--strict", str(image)]) == 1


def test_special_and_symlink_sizes(tmp_path: Path, image: Path) -> None:
    fifo = find(image, "inode (compact)", nid=nid_of(image, "fifo"))
    patch(image, field_offset(fifo, "i_size"), u32(10))
    link = find(image, "inode (compact)", nid=nid_of(image, "link"))
    patch(image, field_offset(link, "i_size"), u32(0))
    found = errors(image)
    assert any("FIFO inode with i_size 10" in m for m in found), found
    assert any("symlink target of 0 bytes" in m for m in found), found


def test_inline_tail_crossing_a_block(image: Path) -> None:
    core = find(image, "inode (compact)", nid=nid_of(image, "ab"))
    patch(image, field_offset(core, "i_size"), u32(BS - 1))
    assert any("inline data crosses a block boundary" in m for m in errors(image))


def test_bogus_mode_and_layout(tmp_path: Path, image: Path) -> None:
    core = find(image, "inode (compact)", nid=nid_of(image, "ab"))
    copy = tmp_path / "copy"
    copy.write_bytes(image.read_bytes())
    patch(copy, field_offset(core, "i_mode"), u16(0o170644))
    assert any("bogus i_mode" in m for m in errors(copy))
    patch(image, field_offset(core, "i_format"), u16(0x20))
    assert any("i_format 0x20 uses unknown bits" in m for m in errors(image))


def test_data_blocks_beyond_the_image(image: Path) -> None:
    core = find(image, "inode (compact)", nid=nid_of(image, "big"))
    patch(image, field_offset(core, "i_u"), u32(10_000))
    assert any("beyond the image" in m for m in errors(image))


# -------------------------------------------------------------------------------- xattrs


def test_xattr_problems(tmp_path: Path, image: Path) -> None:
    nid = nid_of(image, "ab")
    shared_id = find(image, "shared xattr id", nid=nid)
    copy = tmp_path / "copy"
    copy.write_bytes(image.read_bytes())
    patch(copy, shared_id.offset, u32(0xFFFFFF))
    assert any("shared xattr id 16777215" in m for m in errors(copy))
    core = find(image, "inode (compact)", nid=nid)
    copy.write_bytes(image.read_bytes())
    patch(copy, field_offset(core, "i_xattr_icount"), u16(1))
    assert any("xattr body of only a header" in m for m in errors(copy))
    entry = find(image, "xattr entry", nid=nid_of(image, "aa"))
    copy.write_bytes(image.read_bytes())
    patch(copy, entry.offset + 2, u16(5000))
    assert any("overruns" in m for m in errors(copy))


def test_bloom_filter_hiding_a_name(image: Path) -> None:
    header = find(image, "xattr ibody header", nid=nid_of(image, "aa"))
    patch(image, header.offset, u32(0xFFFFFFFF))
    found = errors(image)
    assert any("marks the present xattr user.own absent" in m for m in found), found
    assert any("marks the present xattr user.shared absent" in m for m in found), found


# -------------------------------------------------------------------------------- chunks, compression


def test_chunk_device_ids(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    image, blob = tmp_path / "img", tmp_path / "blob"
    erofs_utils.mkfs(image, src, "--quiet", "--chunksize=4096", f"--blobdev={blob}")
    assert messages(image, [str(blob)], data=True) == []
    index = next(s for s in structures(image, (str(blob),)) if s.kind == "chunk index")
    patch(image, index.offset + 2, u16(5))
    found = [str(p) for p in check_source(image, [str(blob)])]
    assert any("device id 5, but the image has 1 extra devices" in m for m in found), found
    # Without the blob the data cannot be located: a warning, not a problem.
    found = [str(p) for p in check_source(tmp_path / "img")]
    assert any("pass the extra devices" in m for m in found)
    short = tmp_path / "short_blob"
    short.write_bytes(blob.read_bytes()[:BS])
    # mkfs 1.5 leaves the slot's block count 0, so a short blob shows as chunks beyond it.
    found = [str(p) for p in check_source(tmp_path / "img", [str(short)])]
    assert any("beyond device 1 (0x1000 bytes)" in m for m in found), found


def _mkfs_compressed(utils: ErofsUtils, tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    (src / "text").write_bytes(b"".join(b"line %05d of some text\n" % i for i in range(4000)))
    image = tmp / "img"
    utils.mkfs(image, src, "--quiet", "-zlz4", "-Elegacy-compress")
    return image


def test_pcluster_beyond_the_image(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    image = _mkfs_compressed(erofs_utils, tmp_path)
    head = next(s for s in structures(image) if s.kind == "lcluster index" and "HEAD1" in s.note)
    patch(image, head.offset + 4, u32(100_000))
    assert any("beyond the image" in m for m in errors(image))


def test_data_option_decompresses(erofs_utils: ErofsUtils, tmp_path: Path) -> None:
    image = _mkfs_compressed(erofs_utils, tmp_path)
    ext = next(s for s in structures(image) if s.kind == "extent" and s.fields["algorithm"] == "LZ4")
    raw = image.read_bytes()
    # Damage the end of the stream (the start may be zero padding).
    end = ext.offset + ext.size
    patch(image, end - 40, bytes(b ^ 0x5A for b in raw[end - 40 : end - 20]))
    assert errors(image) == []
    found = errors(image, data=True)
    assert found and all("pcluster" in m for m in found), found


# -------------------------------------------------------------------------------- limits


def test_problem_limit(image: Path) -> None:
    for name in ("aa", "ab", "ac", "big", "link"):
        patch(image, field_offset(dirent(image, name), "file_type"), bytes([4]))
    with erofsgen.open_image(image) as img:
        found = check_image(img, limit=3)
    assert len(found) == 4 and str(found[-1]) == "check: stopped after 3 problems"
    assert cli_main(["check", "--quiet", "--max-problems", "2", str(image)]) == 1


def test_never_raises_on_garbage(tmp_path: Path) -> None:
    junk: Callable[[int], bytes] = lambda n: bytes((i * 7919) & 0xFF for i in range(n))  # noqa: E731
    for size in (0, 100, 1024 + 128, 5000, 20000):
        path = tmp_path / f"junk{size}"
        path.write_bytes(junk(size))
        with pytest.raises(InvalidInputError, match="not an EROFS image"):
            errors(path)
