"""A directory tree as mkcomposefs 1.0.8 reads it (its SOURCE when not --from-file).

Each entry becomes its own inode (mkcomposefs does not detect hard links, so neither does
this: the digest must be the one mkcomposefs gives), with nlink 1, the lstat mode, owner and
rdev, the mtime unless `use_epoch`, and the xattrs unless skipped. Every non-empty regular file
gets its fs-verity digest and the backing path `XX/YYYY...` named after it; files of at most
64 bytes are also kept inline. Digests are computed on a thread pool (hashlib releases the GIL).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..verity import fsverity_digest_fd
from .tree import CfsNode

INLINE_MAX = 64  # LCFS_RECOMMENDED_INLINE_CONTENT_MAX


@dataclass(frozen=True, slots=True)
class ScanOptions:
    use_epoch: bool = False  # all mtimes 0
    skip_devices: bool = False  # leave out block and character devices (whiteouts too)
    skip_xattrs: bool = False
    user_xattrs: bool = False  # only user.* xattrs
    threads: int = 1


def digest_path(digest: bytes) -> bytes:
    """The object name of a digest: `XX/YYYY...` (first byte, then the rest, in hex)."""
    text = digest.hex().encode()
    return text[:2] + b"/" + text[2:]


def _xattrs(path: bytes, options: ScanOptions) -> dict[bytes, bytes]:
    if options.skip_xattrs:
        return {}
    names = os.listxattr(path, follow_symlinks=False)
    result = {}
    for name in names:
        if options.user_xattrs and not name.startswith("user."):
            continue
        result[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
    return result


def _node(path: bytes, st: os.stat_result, options: ScanOptions) -> CfsNode:
    node = CfsNode(
        st.st_mode,
        st.st_uid,
        st.st_gid,
        1,
        st.st_rdev & 0xFFFFFFFF,  # libcomposefs keeps 32 bits of the dev_t
        0 if options.use_epoch else st.st_mtime_ns // 10**9,
        0 if options.use_epoch else st.st_mtime_ns % 10**9,
        st.st_size,
    )
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if not target or len(target) >= 4096:
            raise InvalidInputError("symlink target is empty or too long", os.fsdecode(path))
        node.payload = target
        node.size = len(target)
    node.xattrs = _xattrs(path, options)
    return node


def scan_directory(source: str | bytes, options: ScanOptions = ScanOptions()) -> CfsNode:
    """The tree under `source` (a directory), with digests of its regular files."""
    top = os.fsencode(source)
    st = os.lstat(top)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError("the source must be a directory", os.fsdecode(top))
    root = _node(top, st, options)
    root.children = {}
    files: list[tuple[bytes, CfsNode]] = []
    stack = [(top, root)]
    while stack:
        path, directory = stack.pop()
        assert directory.children is not None
        with os.scandir(path) as entries:
            listed = [(entry.name, entry.path) for entry in entries]
        for name, child_path in listed:
            if len(name) > 255:
                raise InvalidInputError("file name longer than 255 bytes", os.fsdecode(child_path))
            child_st = os.lstat(child_path)
            if options.skip_devices and (stat.S_ISCHR(child_st.st_mode) or stat.S_ISBLK(child_st.st_mode)):
                continue
            child = _node(child_path, child_st, options)
            directory.children[name] = child
            if stat.S_ISDIR(child_st.st_mode):
                child.children = {}
                stack.append((child_path, child))
            elif stat.S_ISREG(child_st.st_mode) and child.size > 0:
                files.append((child_path, child))
    _digest_files(files, options.threads)
    return root


def _digest_one(item: tuple[bytes, CfsNode]) -> None:
    path, node = item
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        node.digest = fsverity_digest_fd(fd)
        if node.size <= INLINE_MAX:
            content = os.pread(fd, node.size, 0)
            if len(content) != node.size:
                raise InvalidInputError("file changed size while being read", os.fsdecode(path))
            node.content = content
    finally:
        os.close(fd)
    node.payload = digest_path(node.digest)


def _digest_files(files: list[tuple[bytes, CfsNode]], threads: int) -> None:
    """Digest every file; with threads, each takes a share of the bytes as one task.

    Small files are mostly Python work under the GIL, so one task per file would have the
    threads contend for it (slower than one thread); a few large tasks let hashlib's
    GIL-free hashing of the big files overlap instead.
    """
    if threads <= 1 or len(files) < 2:
        for item in files:
            _digest_one(item)
        return
    shares: list[list[tuple[bytes, CfsNode]]] = [[] for _ in range(threads)]
    loads = [0] * threads
    for item in sorted(files, key=lambda item: -item[1].size):  # largest first: even shares
        least = loads.index(min(loads))
        shares[least].append(item)
        loads[least] += item[1].size + _PER_FILE_COST
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(_digest_share, shares):
            pass


_PER_FILE_COST = 16384  # bytes of hashing a file's open, read and bookkeeping are worth


def _digest_share(share: list[tuple[bytes, CfsNode]]) -> None:
    for item in share:
        _digest_one(item)


def external_files(root: CfsNode, top: bytes) -> Iterator[tuple[bytes, CfsNode]]:
    """(source path, node) of every file whose data lives in the object store."""
    stack = [(top, root)]
    while stack:
        path, node = stack.pop()
        for name, child in (node.children or {}).items():
            child_path = os.path.join(path, name)
            if child.children is not None:
                stack.append((child_path, child))
            elif stat.S_ISREG(child.mode) and child.content is None and child.payload:
                yield child_path, child
