"""The read commands: `inspect` and `ls -l` against dump.erofs, `cat`, `extract`, odd names,
errors as one line, broken pipes.

dump.erofs (1.5 here; its version is in the pytest header) is the oracle for the superblock
fields and statistics both tools print, and for the per-inode fields `ls -l -i` shows.
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import erofsgen
from erofsgen.cli import main as cli_main
from erofsgen.reader.stats import COMPAT_NAMES, INCOMPAT_NAMES
from tests.support.erofs_utils import ErofsUtils, find_erofs_utils
from tests.test_check import pack, small_tree

MKFS_OPTIONS = {
    "plain": [],
    "lz4hc": ["-zlz4hc"],
    "big_pcluster": ["-zlz4hc", "-C65536"],
    "ztailpacking": ["-zlz4hc", "-Eztailpacking"],
    "chunks": ["--chunksize=4096"],
    "no_xattrs": ["-x", "-1"],
}
# dump.erofs 1.5 prints only these feature names.
DUMP_1_5_FEATURES = {"sb_csum", "mtime", "0padding", "big_pcluster", "chunked_file", "device_table"}
FEATURE_BITS = {**{n: ("compat", int(b)) for n, b in COMPAT_NAMES.items()}}
FEATURE_BITS.update({n: ("incompat", int(b)) for n, b in INCOMPAT_NAMES.items()})


@pytest.fixture(scope="module")
def mkfs_images(tmp_path_factory: pytest.TempPathFactory, scenario_tree_short_names: Path) -> dict[str, Path]:
    utils = find_erofs_utils()
    if utils is None:
        pytest.skip("erofs-utils not installed")
    tmp = tmp_path_factory.mktemp("cli_read")
    images = {}
    for name, opts in MKFS_OPTIONS.items():
        images[name] = tmp / name
        utils.mkfs(images[name], scenario_tree_short_names, "--quiet", *opts)
    return images


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli_main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def dump_fields(text: str) -> dict[str, str]:
    """'Filesystem <label>: <value>' lines of dump.erofs -s/-S."""
    fields = {}
    for line in text.splitlines():
        m = re.match(r"Filesystem ([^:]+):\s*(.*?)\s*$", line)
        if m:
            fields[m[1]] = m[2]
    return fields


# -------------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("name", MKFS_OPTIONS)
def test_inspect_agrees_with_dump_erofs(
    erofs_utils: ErofsUtils, mkfs_images: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    image = mkfs_images[name]
    theirs = dump_fields(erofs_utils.dump(image, "-s", "-S"))
    status, out, _ = run(capsys, "inspect", "--json", str(image))
    assert status == 0, erofs_utils.version_text
    ours = json.loads(out)
    sb = ours["superblock"]
    assert int(theirs["magic number"], 16) == sb["magic"]
    pairs = {
        "blocks": sb["blocks"],
        "inode metadata start block": sb["meta_blkaddr"],
        "shared xattr metadata start block": sb["xattr_blkaddr"],
        "root nid": sb["root_nid"],
        "inode count": sb["inos"],
        "total file count": ours["files"],
        "unknown type count": 0,
        "regular file count": ours["by_type"]["regular"],
        "directory count": ours["by_type"]["directory"],
        "char dev count": ours["by_type"]["chardev"],
        "block dev count": ours["by_type"]["blockdev"],
        "FIFO file count": ours["by_type"]["fifo"],
        "SOCK file count": ours["by_type"]["socket"],
        "symlink file count": ours["by_type"]["symlink"],
        "compressed files": ours["compressed_files"],
        "uncompressed files": ours["uncompressed_files"],
    }
    for label, value in pairs.items():
        assert int(theirs[label]) == value, (label, erofs_utils.version_text)
    assert theirs["total original file size"] == f"{ours['original_size']} Bytes"
    assert theirs["total file size"] == f"{ours['ondisk_size']} Bytes"
    assert theirs["compress rate"] == f"{ours['compress_rate'] * 100:.2f}%"
    assert theirs["created"] == sb["created"]
    assert theirs["UUID"] == sb["uuid"]
    shown = set(theirs["features"].split())
    assert shown == set(sb["features"]) & DUMP_1_5_FEATURES
    # Names erofs-utils prints for bits it knows but that are not set must not be ours either.
    for feature in DUMP_1_5_FEATURES - shown:
        area, bit = FEATURE_BITS[feature]
        assert feature not in sb["features"], (area, bit)


def test_inspect_text_and_erofsgen_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = pack(small_tree(tmp_path / "src"), tmp_path / "img", "-L", "my label")
    status, out, _ = run(capsys, "inspect", str(image))
    assert status == 0
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith(" "))
    assert fields["magic number"].strip() == "0xE0F5E1E2"
    assert fields["label"].strip() == "my label"
    assert fields["UUID"].strip() == "00000000-0000-0000-0000-000000000000"
    assert fields["features"].split() == ["sb_csum", "mtime", "xattr_filter"]
    assert fields["total file count"].strip() == "11" and fields["distinct inodes"].strip() == "10"
    assert fields["checksum"].strip().endswith("(ok)")


# -------------------------------------------------------------------------------- ls


def _sample_paths(image: Path, count: int) -> list[bytes]:
    paths = []
    with erofsgen.open_image(image) as img:
        for dirpath, dirnames, filenames in img.walk():
            paths += [os.fsencode(f"{dirpath.rstrip('/')}/{n}") for n in dirnames + filenames]
    paths.sort()
    return [b"/", *random.Random(4).sample(paths, count)]


_DUMP_TYPES = {
    "regular file": stat.S_IFREG,
    "directory": stat.S_IFDIR,
    "symlink file": stat.S_IFLNK,
    "char dev": stat.S_IFCHR,
    "block dev": stat.S_IFBLK,
    "FIFO file": stat.S_IFIFO,
    "SOCK file": stat.S_IFSOCK,
}


def _dump_inode(utils: ErofsUtils, image: Path, path: bytes) -> dict[str, str]:
    res = subprocess.run(
        [utils.dump_path, f"--path={os.fsdecode(path)}", str(image)],
        capture_output=True,
        check=True,
        text=True,
        errors="surrogateescape",
    )
    text = res.stdout
    m = re.search(r"Size: (\d+)\s+On-disk size: \d+\s+(.+?)\n", text)
    assert m, text
    fields = {"size": m[1], "type": m[2].strip()}
    for key in ("NID", "Links", "Uid", "Gid"):
        found = re.search(rf"{key}: (\d+)", text)
        assert found, text
        fields[key] = found[1]
    access = re.search(r"Access: (\d+)/", text)
    stamp = re.search(r"Timestamp: (.+)", text)
    assert access and stamp, text
    fields["access"], fields["timestamp"] = access[1], stamp[1].strip()
    return fields


@pytest.mark.parametrize("name", ["plain", "lz4hc"])
def test_ls_long_agrees_with_dump_erofs(
    erofs_utils: ErofsUtils, mkfs_images: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    image = mkfs_images[name]
    for path in _sample_paths(image, 60):
        theirs = _dump_inode(erofs_utils, image, path)
        status, out, _ = run(capsys, "ls", "-l", "-i", "-d", str(image), os.fsdecode(path))
        assert status == 0 and out.count("\n") == 1, out
        nid, mode, nlink, uid, gid, rest = out.split(None, 5)
        kind = _DUMP_TYPES[theirs["type"]]
        assert mode == stat.filemode(kind | int(theirs["access"], 8)), (path, erofs_utils.version_text)
        assert (nid, nlink, uid, gid) == (theirs["NID"], theirs["Links"], theirs["Uid"], theirs["Gid"]), path
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            size, day, clock = rest.split()[:3]
            assert size == theirs["size"], path
        else:
            day, clock = rest.split()[2:4]
        assert f"{day} {clock}" == theirs["timestamp"], path


def test_ls_listing(mkfs_images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    image = str(mkfs_images["plain"])
    status, out, _ = run(capsys, "ls", image, "names")
    assert status == 0
    assert out.splitlines() == [
        "\\ leading\\ space",  # escaped as `ls -b` does
        "-dash",
        "...",
        ".hidden",
        "ctrl\\001\\177",
        "dir\\ \\303(",
        "glob*?[]",
        "new\\nline",
        "quote'\"back\\\\slash",
        "tab\\there",
        "with\\ space",
        "x",
        "ünïcødé\\ ☃",
        "\\377\\376\\ name",
    ]
    status, out, _ = run(capsys, "ls", "-l", image, "dev")
    assert "crw-rw-rw-   1     0     0    1,    3 " in out and out.rstrip().endswith("whiteout")
    status, out, _ = run(capsys, "ls", "-l", image, "links/relative")
    assert out.rstrip().endswith("links/relative -> ../sizes/s000001")
    status, out, _ = run(capsys, "ls", "-R", image, "hardlinks")
    assert out.startswith("hardlinks:\n") and "\n\nhardlinks/a:\nfifo_2\none\n" in out
    assert "\n\nhardlinks/c/d:\nthree\n" in out


def test_ls_errors_are_one_line(mkfs_images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "ls", str(mkfs_images["plain"]), "no/such")
    assert status == 2 and out == "" and err == "erofsgen: error: no/such: no such file or directory\n"
    status, _, err = run(capsys, "ls", "/nonexistent.img")
    assert status == 2 and err.startswith("erofsgen: error:") and err.count("\n") == 1


def test_ls_recursive_on_damaged_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_check import find, patch

    image = pack(small_tree(tmp_path / "src"), tmp_path / "img")
    first = find(image, "dirent", note=".", nid=_nid(image, "sub/inner"))
    patch(image, first.offset + 8, b"\x00\x00")  # nameoff 0
    status, out, err = run(capsys, "ls", "-R", str(image))
    assert status == 1
    assert "/sub/inner:\n" in out and "invalid dirent[0].nameoff 0" in err
    assert "Traceback" not in err


def _nid(image: Path, path: str) -> int:
    with erofsgen.open_image(image) as img:
        return img.lookup(path)


# -------------------------------------------------------------------------------- cat


def _cat(image: Path, path: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "erofsgen", "cat", str(image), path], capture_output=True, check=False
    )


def test_cat(mkfs_images: dict[str, Path], scenario_tree_short_names: Path) -> None:
    src = scenario_tree_short_names
    image = mkfs_images["lz4hc"]
    for rel in ("compressible/text_300001", "sizes/s004097", "names/\udcff\udcfe name", "sizes/s000000"):
        res = _cat(image, rel)
        assert res.returncode == 0 and res.stderr == b""
        assert res.stdout == (src / rel).read_bytes(), rel
    for rel, why in (("sizes", "not a regular file (dir)"), ("links/short", "is a symbolic link")):
        res = _cat(image, rel)
        assert res.returncode == 2 and res.stdout == b""
        assert res.stderr.startswith(b"erofsgen: error: ") and why.encode() in res.stderr, res.stderr


def test_cat_into_a_closed_pipe(mkfs_images: dict[str, Path]) -> None:
    cmd = [sys.executable, "-m", "erofsgen", "cat", str(mkfs_images["lz4hc"]), "compressible/text_300001"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        head = proc.stdout.read(100)
        proc.stdout.close()
        err = proc.stderr.read()
    assert len(head) == 100 and proc.returncode == 0 and err == b""


@pytest.mark.parametrize("command", [["cat", "/aa"], ["ls", "-lR"], ["inspect"], ["dump"]])
def test_full_standard_output_is_named(command: list[str], tmp_path: Path) -> None:
    """`> /dev/full` is one line naming standard output, not a bare `[Errno 28]`."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    image = pack(small_tree(tmp_path / "src"), tmp_path / "img")
    args = [sys.executable, "-m", "erofsgen", command[0], str(image), *command[1:]]
    with open("/dev/full", "wb") as full:
        res = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, check=False)
    assert (res.returncode, res.stderr) == (2, b"erofsgen: error: standard output: No space left on device\n")


# -------------------------------------------------------------------------------- extract


def test_extract_summary_and_single_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = pack(small_tree(tmp_path / "src"), tmp_path / "img")
    status, out, err = run(capsys, "extract", str(image), str(tmp_path / "out"))
    assert status == 0 and err == ""
    assert out == "extracted 2 directories, 5 files, 1 symlinks, 1 special files, 1 hard links\n"
    assert (tmp_path / "out" / "sub" / "hard").read_bytes() == (tmp_path / "src" / "aa").read_bytes()
    status, out, _ = run(capsys, "extract", "--quiet", "--path", "sub/file", str(image), str(tmp_path / "f"))
    assert status == 0 and out == "" and (tmp_path / "f").read_bytes() == b"in sub\n"
    status, out, err = run(capsys, "extract", str(image), str(tmp_path / "out"))
    assert status == 2 and out == "" and "destination directory is not empty" in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    for name in ("inspect", "ls", "cat", "extract", "dump", "check"):
        assert re.search(rf"^\s+{name}\s", out, re.M), name
