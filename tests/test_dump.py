"""The structural dump: offsets and fields agree with the reader, every structure parses and
rebuilds to identical bytes (erofsgen, mkfs.erofs and hand-built compressed images), damage
shows as error items, and the `dump` command prints text or JSON."""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.format.constants import CompressionAlgorithm, DataLayout
from erofsgen.format.zmap import compact_index_size, compact_layout
from erofsgen.reader.dump import (
    DumpError,
    Structure,
    compact_packs,
    escape_name,
    field_offset,
    format_text,
    inode_items,
    iter_image,
    rebuild_check,
    to_json,
)
from erofsgen.reader.zmap import ZMap
from tests.support.erofs_utils import ErofsUtils
from tests.test_check import pack, patch, small_tree
from tests.test_reader_zmap import NID, build_image, standard_extents


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return pack(small_tree(tmp_path / "src"), tmp_path / "img")


def items(path: Path) -> list[Structure | DumpError]:
    with erofsgen.open_image(path) as img:
        return list(iter_image(img))


def test_structures_agree_with_the_reader(image: Path) -> None:
    found = items(image)
    assert not [i for i in found if isinstance(i, DumpError)]
    structs = [i for i in found if isinstance(i, Structure)]
    assert structs[0].kind == "superblock" and structs[0].offset == 1024 and structs[0].size == 128
    names: dict[int, list[str]] = defaultdict(list)
    with erofsgen.open_image(image) as img:
        for s in structs:
            if s.kind.startswith("inode"):
                info = img.inode(s.nid or 0)
                assert (s.offset, s.fields["i_size"], s.fields["i_mode"]) == (
                    info.offset,
                    info.size,
                    info.mode,
                )
                assert s.path is not None and img.lookup(s.path) == s.nid
            elif s.kind == "dirent":
                names[s.nid or 0].append(s.note)
                assert img.inode(s.fields["nid"]).nid == s.fields["nid"]
        for nid, listed in names.items():
            assert listed == [".", "..", *map(escape_name, img.listdir_nid(nid))]
        assert field_offset(structs[0], "root_nid") == 1024 + 14
    kinds = {s.kind for s in structs}
    for kind in (
        "xattr ibody header",
        "shared xattr id",
        "xattr entry",
        "shared xattr entry (id 0)",
        "dirent",
    ):
        assert kind in kinds, kind


@pytest.mark.parametrize(
    "opts", [[], ["-b", "512"], ["-b", "2048"], ["-E", "force-inode-extended"], ["--xattr-prefix", "user.sh"]]
)
def test_erofsgen_images_rebuild_exactly(tmp_path: Path, opts: list[str]) -> None:
    image = pack(small_tree(tmp_path / "src"), tmp_path / "img", *opts)
    with erofsgen.open_image(image) as img:
        report = rebuild_check(img)
    assert report.ok, report.failures
    assert report.checked > 30
    if opts[:1] == ["--xattr-prefix"]:
        assert any(s.kind == "long xattr prefix 0" for s in items(image) if isinstance(s, Structure))


@pytest.mark.parametrize(
    ("opts", "kinds"),
    [
        (["-zlz4", "-Elegacy-compress"], {"lcluster index", "map reserved", "extent"}),
        (
            ["-zlz4hc", "-C65536", "-Eztailpacking"],
            {"compacted 2B pack", "compacted 4B pack", "inline pcluster"},
        ),
        (["--chunksize=8192"], {"chunk block map entry"}),
    ],
)
def test_mkfs_images_rebuild_exactly(
    erofs_utils: ErofsUtils, tmp_path: Path, opts: list[str], kinds: set[str]
) -> None:
    src = small_tree(tmp_path / "src")
    (src / "text").write_bytes(b"".join(b"line %05d of some text\n" % i for i in range(9000)))
    (src / "tail").write_bytes(b"abc" * 3000)
    image = tmp_path / "img"
    erofs_utils.mkfs(image, src, "--quiet", *opts)
    with erofsgen.open_image(image) as img:
        report = rebuild_check(img)
    assert report.ok, report.failures
    assert kinds <= {s.kind for s in items(image) if isinstance(s, Structure)}


@pytest.mark.parametrize("layout", [DataLayout.COMPRESSED_FULL, DataLayout.COMPRESSED_COMPACT])
@pytest.mark.parametrize("alg", list(CompressionAlgorithm))
def test_handmade_compressed_inodes(layout: DataLayout, alg: CompressionAlgorithm) -> None:
    raw = build_image(standard_extents(alg), layout=layout, big=True)
    with erofsgen.open_image(io.BytesIO(raw)) as img:
        got = list(inode_items(img, NID))
        assert not [i for i in got if isinstance(i, DumpError)], got
        extents = [i.fields for i in got if isinstance(i, Structure) and i.kind == "extent"]
        zmap = ZMap(img.storage, img.superblock, img.inode(NID))
        want = zmap.extents()
        assert [(e["logical"], e["length"], e["plen"]) for e in extents] == [
            (e.logical, e.length, e.plen) for e in want
        ]
        report = rebuild_check(img)
        assert report.ok, report.failures
        kinds = {i.kind for i in iter_image(img) if isinstance(i, Structure)}
    if alg != CompressionAlgorithm.LZ4:  # the others need compression config records
        assert f"{alg.name} config" in kinds, kinds


def test_compact_pack_geometry() -> None:
    for inode_end in range(1152 + 32, 1152 + 96, 4):
        for total in range(0, 45):
            for two_byte in (False, True):
                packs = list(compact_packs(inode_end, total, two_byte))
                assert sum(n for *_, n in packs) == total
                layout = compact_layout(inode_end, total, two_byte)
                if packs:
                    off, unit, _, _ = packs[-1]
                    end = off + (8 if unit == 4 else 32)
                    assert end - layout.ebase == compact_index_size(layout, total)
                assert [first for _, _, first, _ in packs] == sorted({first for _, _, first, _ in packs})


def test_rebuild_finds_stray_bytes(tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src")
    (src / "many").mkdir()
    for i in range(300):
        (src / "many" / f"entry_with_a_long_name_{i:04d}").write_bytes(b"")
    image = pack(src, tmp_path / "img")
    structs = [i for i in items(image) if isinstance(i, Structure)]
    entry = next(
        s
        for s in structs
        if s.kind == "xattr entry" and (len(s.fields["e_name"]) + len(s.fields["e_value"])) % 4
    )
    pad = entry.offset + entry.size - 1
    copy = tmp_path / "copy"
    copy.write_bytes(image.read_bytes())
    patch(copy, pad, b"\x01")
    with erofsgen.open_image(copy) as img:
        report = rebuild_check(img)
    assert len(report.failures) == 1 and report.failures[0].startswith("xattr entry @")
    block = next(s for s in structs if s.kind == "directory block" and s.size == 4096)
    patch(image, block.offset + block.size - 1, b"\x01")  # after the last name: must be zero
    with erofsgen.open_image(image) as img:
        report = rebuild_check(img)
    assert any(f.startswith("directory block @") for f in report.failures), report.failures


def test_damage_becomes_error_items(image: Path) -> None:
    with erofsgen.open_image(image) as img:
        nid = img.lookup("aa")
        header = next(
            i for i in inode_items(img, nid) if isinstance(i, Structure) and i.kind == "xattr ibody header"
        )
    patch(image, header.offset + 4, b"\xff")  # 255 shared ids overrun the body
    found = items(image)
    errors = [i for i in found if isinstance(i, DumpError)]
    assert errors and errors[0].nid == nid
    assert format_text(errors[0]).startswith(f"error: xattr nid {nid}")
    # Everything after the damaged inode is still dumped.
    assert sum(isinstance(i, Structure) and i.kind.startswith("inode") for i in found) == 10


def test_escape_name() -> None:
    assert escape_name(b"plain") == "plain"
    assert escape_name("ünï ☃".encode()) == "ünï\\ ☃"  # as ls -b: printable UTF-8 kept, space escaped
    assert escape_name(b"\xff\xfe x") == "\\377\\376\\ x"
    assert escape_name(b"new\nline\ttab\x01\x7f") == "new\\nline\\ttab\\001\\177"
    assert escape_name(b"back\\slash") == "back\\\\slash"
    assert escape_name("\u2028".encode()) == "\\342\\200\\250"


def test_dump_command(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["dump", str(image)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("superblock @0x400 +128  (block size 4096, root nid ")
    assert "dirent @" in text and "    i_format = 0x" in text
    assert cli_main(["dump", "--json", str(image)]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["kind"] == "superblock" and records[0]["fields"]["magic"] == 0xE0F5E1E2
    assert cli_main(["dump", "--path", "sub/file", str(image)]) == 0
    one = capsys.readouterr().out
    assert one.startswith("inode (compact) @") and " /sub/file  (" in one.splitlines()[0]
    nid = int(one.split(" nid ")[1].split()[0])
    assert cli_main(["dump", "--json", "--nid", hex(nid), str(image)]) == 0
    by_nid = json.loads(capsys.readouterr().out)
    assert by_nid[0]["nid"] == nid and by_nid[0]["kind"] == "inode (compact)"
    assert cli_main(["dump", "--path", "nope", str(image)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_dump_command_reports_damage(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with erofsgen.open_image(image) as img:
        nid = img.lookup("big")
    patch(image, img_offset(image, nid), b"\xff\xff")  # i_format with unknown bits
    assert cli_main(["dump", str(image)]) == 1
    out = capsys.readouterr().out
    assert f"error: inode nid {nid}" in out and "Traceback" not in out
    assert cli_main(["dump", "--json", str(image)]) == 1
    records = json.loads(capsys.readouterr().out)
    assert any("error" in r and r["nid"] == nid for r in records)


def img_offset(path: Path, nid: int) -> int:
    with erofsgen.open_image(path) as img:
        return img.inode(nid).offset


def test_json_values() -> None:
    s = Structure("x", 8, 2, {"a": b"\x00\x01", "b": [("HEAD1", 3)], "c": 5}, nid=1, note="n")
    assert to_json(s) == {
        "kind": "x",
        "offset": 8,
        "size": 2,
        "nid": 1,
        "note": "n",
        "fields": {"a": "0001", "b": [["HEAD1", 3]], "c": 5},
    }
    assert to_json(DumpError("inode", "bad", nid=3, offset=None)) == {
        "error": "bad",
        "kind": "inode",
        "nid": 3,
        "offset": None,
    }


def test_non_utf8_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / os.fsdecode(b"\xff name")).write_bytes(b"x")
    image = pack(src, tmp_path / "img")
    assert cli_main(["dump", str(image)]) == 0
    out = capsys.readouterr().out
    assert "/\\377\\ name" in out and "(\\377\\ name)" in out
