"""A TreeSnapshot of an image read through erofsgen's own reader (no mount, no root needed)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from erofsgen import open_image
from erofsgen.reader.image import Image
from tests.support.trees import KIND_OF_MODE, Entry, TreeSnapshot


def _entry(img: Image, nid: int) -> Entry:
    st = img.stat_nid(nid)
    kind = KIND_OF_MODE[stat.S_IFMT(st.mode)]
    content = None
    if kind == "file":
        digest = hashlib.sha256()
        with img.open_nid(nid) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        content = digest.hexdigest()
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(st.mode),
        uid=st.uid,
        gid=st.gid,
        nlink=st.nlink,
        size=None if kind == "dir" else st.size,
        mtime_ns=st.mtime_ns,
        rdev=(st.major, st.minor) if kind in ("chr", "blk") else None,
        target=img.readlink_nid(nid) if kind == "symlink" else None,
        sha256=content,
        xattrs=tuple(sorted((os.fsdecode(k), v) for k, v in img.xattrs_nid(nid).items())),
    )


def image_snapshot(image: Path, devices: tuple[Path, ...] = ()) -> TreeSnapshot:
    """What the image holds, keyed like `trees.snapshot` ('.' is the root)."""
    entries: dict[str, Entry] = {}
    by_nid: dict[int, list[str]] = {}
    with open_image(image, devices) as img:
        stack = [("", img.root_nid)]
        entries["."] = _entry(img, img.root_nid)
        while stack:
            prefix, dir_nid = stack.pop()
            for raw in img.scandir_nid(dir_nid):
                rel = prefix + os.fsdecode(raw.name)
                entry = _entry(img, raw.nid)
                entries[rel] = entry
                if entry.kind == "dir":
                    stack.append((rel + "/", raw.nid))
                else:
                    by_nid.setdefault(raw.nid, []).append(rel)
    links = frozenset(frozenset(paths) for paths in by_nid.values() if len(paths) > 1)
    return TreeSnapshot(entries, links)
