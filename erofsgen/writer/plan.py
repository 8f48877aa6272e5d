"""The planning pass: every inode's core, xattrs, data layout, nid and block address.

Nothing is written here. Directories need their children's nids before they can be encoded, so
the whole layout is decided first and `emit` only turns it into bytes.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..format.constants import (
    EROFS_INODE_SLOT_SIZE,
    EROFS_NULL_ADDR,
    EROFS_SUPER_OFFSET,
    DataLayout,
    FileType,
    InodeVersion,
)
from ..format.dirent import file_type_of_mode
from ..format.inode import INODE_COMPACT, INODE_EXTENDED, encode_rdev, i_format
from ..format.superblock import SUPERBLOCK
from ..model import Device, Directory, File, Node, Symlink, full_mode
from .dirs import DirectoryShape, shape_directory
from .options import MAX_LONG_PREFIXES, InodeFormat, WriteOptions
from .pack import pack_records
from .validate import check_name, check_node, show
from .xattrs import (
    NameEncoder,
    SharedArea,
    build_shared_area,
    choose_long_prefixes,
    choose_shared,
    inode_xattr_body,
)

COMPACT_LIMIT = 0xFFFF  # nlink, uid and gid of a compact inode are 16 bits
MAX_BLOCKS = 2**32 - 1  # block addresses are 32 bits without 48BIT


@dataclass(eq=False, slots=True)
class PlannedInode:
    """One inode as it will be written. `offset` is its absolute byte position (nid * 32)."""

    node: Node
    path: bytes  # the first name it was found under, for messages
    ino: int
    mode: int  # st_mode: type and permission bits
    ftype: int  # the dirent file type
    nlink: int = 1
    parent: PlannedInode | None = None  # directories: the target of ".."
    children: list[tuple[bytes, PlannedInode]] | None = None  # directories: entries by name
    extended: bool = False
    layout: DataLayout = DataLayout.FLAT_PLAIN
    size: int = 0
    xattr_body: bytes = b""
    tail_size: int = 0  # bytes stored inline after the inode (FLAT_INLINE)
    nblocks: int = 0  # whole data blocks
    shape: DirectoryShape | None = None
    offset: int = 0
    startblk: int = EROFS_NULL_ADDR
    i_u: int = 0  # the core's union: first block, rdev, or 0

    def finish(self, startblk: int) -> None:
        """Record the first data block and derive the i_u the core will carry."""
        self.startblk = startblk
        node = self.node
        if isinstance(node, Device):
            self.i_u = encode_rdev(node.major, node.minor)
        elif self.nblocks:
            self.i_u = startblk
        elif self.tail_size:
            self.i_u = EROFS_NULL_ADDR  # inline data only: no block

    @property
    def nid(self) -> int:
        return self.offset // EROFS_INODE_SLOT_SIZE

    @property
    def layout_format(self) -> int:
        """i_format: core version and data layout."""
        return i_format(InodeVersion(int(self.extended)), self.layout)

    @property
    def block_bytes(self) -> int:
        """Bytes of data stored in whole blocks (all of it unless there is an inline tail)."""
        return self.size - self.tail_size

    @property
    def core_size(self) -> int:
        return INODE_EXTENDED.size if self.extended else INODE_COMPACT.size


@dataclass(slots=True)
class Layout:
    """The complete plan of an image, in metadata order."""

    options: WriteOptions
    inodes: list[PlannedInode]  # sorted by offset
    root: PlannedInode
    build_time_ns: int
    shared: SharedArea
    xattr_blkaddr: int
    prefix_table: bytes
    prefix_start: int  # byte offset of the long-prefix table (right after the superblock)
    prefix_count: int
    data_start: int  # first data block
    blocks: int  # image size in blocks
    total_data: int  # bytes of file data to copy, for progress


def collect_inodes(root: Directory, *, xattrs: bool = True) -> list[PlannedInode]:
    """Unique inodes breadth first, names sorted, with link counts and parents.

    Every name and node is validated on the way (see validate.py), so nothing is planned for a
    tree that cannot be stored; `xattrs=False` skips xattrs, which are being dropped.
    """
    check_node(root, b"", xattrs=xattrs)
    planned: dict[int, PlannedInode] = {}
    root_plan = PlannedInode(root, b"", 1, full_mode(root), FileType.DIR, nlink=2, children=[])
    root_plan.parent = root_plan
    planned[id(root)] = root_plan
    order = [root_plan]
    queue: deque[PlannedInode] = deque([root_plan])
    while queue:
        dir_plan = queue.popleft()
        directory = dir_plan.node
        assert isinstance(directory, Directory) and dir_plan.children is not None
        for name in sorted(directory.children):
            check_name(name, dir_plan.path)
            child = directory.children[name]
            path = dir_plan.path + b"/" + name if dir_plan.path else name
            found = planned.get(id(child))
            if found is not None:
                if found.children is not None:
                    raise InvalidInputError("directory appears under more than one name", show(path))
                found.nlink += 1  # another name for the same node: a hard link
                dir_plan.children.append((name, found))
                continue
            check_node(child, path, xattrs=xattrs)
            mode = full_mode(child)
            plan = PlannedInode(child, path, len(order) + 1, mode, file_type_of_mode(mode))
            planned[id(child)] = plan
            order.append(plan)
            dir_plan.children.append((name, plan))
            if isinstance(child, Directory):
                plan.parent = dir_plan
                plan.nlink = 2
                plan.children = []
                dir_plan.nlink += 1
                queue.append(plan)
    return order


def compact_fits(plan: PlannedInode) -> bool:
    """Whether a compact core's 16/32-bit fields hold the inode (its mtime aside)."""
    meta = plan.node.meta
    return plan.size <= 0xFFFFFFFF and max(plan.nlink, meta.uid, meta.gid) <= COMPACT_LIMIT


def choose_build_time(inodes: list[PlannedInode]) -> int:
    """The most common mtime among inodes that could be compact (ties: the earliest)."""
    counts = Counter(
        p.node.meta.mtime_ns for p in inodes if 0 <= p.node.meta.mtime_ns < 2**64 * 10**9 and compact_fits(p)
    )
    if not counts:
        return 0
    best = max(counts.values())
    return min(t for t, n in counts.items() if n == best)


def needs_extended(plan: PlannedInode, build_time_ns: int, fmt: InodeFormat) -> bool:
    if fmt is InodeFormat.EXTENDED or not compact_fits(plan):
        return True
    return fmt is InodeFormat.AUTO and plan.node.meta.mtime_ns != build_time_ns


def size_inode(plan: PlannedInode, block_size: int) -> None:
    """i_size; for a directory, also how its entries split into blocks (which sets its size)."""
    node = plan.node
    if isinstance(node, File):
        plan.size = node.data.size
    elif isinstance(node, Symlink):
        plan.size = len(node.target)
    elif isinstance(node, Directory):
        plan.shape = shape_directory(list(node.children), block_size)
        plan.size = plan.shape.size


def choose_data_layout(plan: PlannedInode, options: WriteOptions) -> None:
    """FLAT_INLINE when the tail fits in one block with its inode and xattrs, else FLAT_PLAIN."""
    bs = options.block_size
    tail = plan.size % bs
    may_inline = options.inline_data or not isinstance(plan.node, File)
    if tail and may_inline and plan.core_size + len(plan.xattr_body) + tail <= bs:
        plan.layout = DataLayout.FLAT_INLINE
        plan.tail_size = tail
        plan.nblocks = plan.size // bs
    else:
        plan.layout = DataLayout.FLAT_PLAIN
        plan.nblocks = -(-plan.size // bs)


def plan_xattrs(inodes: list[PlannedInode], options: WriteOptions) -> tuple[NameEncoder, SharedArea]:
    if not options.xattrs:
        return NameEncoder(()), SharedArea(b"", {})
    pairs = choose_shared((p.node.meta.xattrs for p in inodes), options.xattr_share_threshold)
    prefixes = list(options.xattr_prefixes)
    if options.auto_xattr_prefixes:
        room = MAX_LONG_PREFIXES - len(prefixes)
        prefixes += choose_long_prefixes((p.node.meta.xattrs for p in inodes), pairs, prefixes, room)
    encoder = NameEncoder(prefixes)
    shared = build_shared_area(pairs, encoder)
    ids = {pair: off // 4 for pair, off in shared.offsets.items()}
    for plan in inodes:
        if plan.node.meta.xattrs:
            plan.xattr_body = inode_xattr_body(plan.node.meta.xattrs, ids, encoder, show(plan.path))
    return encoder, shared


def plan_image(root: Directory, options: WriteOptions) -> Layout:
    """Decide everything about the image; raises InvalidInputError for what cannot be stored."""
    bs = options.block_size
    inodes = collect_inodes(root, xattrs=options.xattrs)
    for plan in inodes:
        size_inode(plan, bs)
    build_time_ns = options.build_time_ns if options.build_time_ns is not None else choose_build_time(inodes)
    if not 0 <= build_time_ns < 2**64 * 10**9:
        raise InvalidInputError(f"build time {build_time_ns} ns is outside the superblock's range")
    encoder, shared = plan_xattrs(inodes, options)
    prefix_table = encoder.prefix_table()
    for plan in inodes:
        plan.extended = needs_extended(plan, build_time_ns, options.inode_format)
        choose_data_layout(plan, options)

    prefix_start = EROFS_SUPER_OFFSET + SUPERBLOCK.size
    meta_start = prefix_start + len(prefix_table)
    records = [(p.core_size + len(p.xattr_body) + p.tail_size, p.tail_size > 0) for p in inodes]
    packed = pack_records(records, meta_start, bs, len(shared.data))
    for plan, offset in zip(inodes, packed.offsets, strict=True):
        plan.offset = offset
    if inodes[0].nid > 0xFFFF:
        raise InvalidInputError("the root directory's inode does not fit a 16-bit nid")

    inodes.sort(key=lambda p: p.offset)
    data_start = -(-packed.end // bs)
    block = data_start
    for plan in inodes:
        plan.finish(block if plan.nblocks else EROFS_NULL_ADDR)
        block += plan.nblocks
    if block > MAX_BLOCKS:
        raise InvalidInputError(f"the image needs {block} blocks, over the 32-bit limit")
    return Layout(
        options=options,
        inodes=inodes,
        root=next(p for p in inodes if p.ino == 1),
        build_time_ns=build_time_ns,
        shared=shared,
        xattr_blkaddr=packed.shared_offset // bs if shared.data else 0,
        prefix_table=prefix_table,
        prefix_start=prefix_start,
        prefix_count=len(encoder.long_prefixes) if prefix_table else 0,
        data_start=data_start,
        blocks=max(block, -(-prefix_start // bs)),
        total_data=sum(p.size for p in inodes if isinstance(p.node, File)),
    )
