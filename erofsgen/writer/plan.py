"""The planning pass: every inode's core, xattrs, data layout, nid and block address.

Nothing is written here. Directories need their children's nids before they can be encoded, so
the whole layout is decided first and `emit` only turns it into bytes. What differs between
producers comes from the layout policy (policy.py); what an inode's data needs comes from its
stored form (stored.py), decided by the data stage (datastage.py) as inodes are collected.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable
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
from ..format.device import DEVICE_SLOT
from ..format.dirent import file_type_of_mode
from ..format.inode import INODE_COMPACT, INODE_EXTENDED, i_format
from ..format.superblock import SUPERBLOCK
from ..model import Directory, File, Metadata, Node, full_mode
from .chunks import ChunkSession, chunk_session
from .compressed import CompressedData, compression_configs
from .datastage import DataStage, stage_for
from .header import Area
from .options import MAX_LONG_PREFIXES, WriteOptions
from .placement import pack_records
from .policy import TIME_LIMIT_NS, LayoutPolicy
from .stored import NO_DATA, PlainData, Stored
from .validate import check_name, check_node, show
from .xattrs import (
    NameEncoder,
    SharedArea,
    build_shared_area,
    choose_long_prefixes,
    choose_shared,
    inode_xattr_body,
)

MAX_BLOCKS = 2**32 - 1  # block addresses are 32 bits without 48BIT
# The root's record, right after the superblock (and the device table, if there is one).
ROOT_OFFSET = EROFS_SUPER_OFFSET + SUPERBLOCK.size
DEVICE_TABLE_OFFSET = ROOT_OFFSET  # 128-byte aligned: devt_slotoff 9
# Files of at least this many blocks are placed first and copied on the copier thread during
# planning; smaller ones cost more in thread hand-overs (each syscall's return waits for the
# GIL) than their copy takes, and are written at emit.
EARLY_MIN_BLOCKS = 4
_I_FORMAT = {(bool(v), layout): i_format(v, layout) for v in InodeVersion for layout in DataLayout}


@dataclass(eq=False, slots=True)
class PlannedInode:
    """One inode as it will be written. `offset` is its absolute byte position (nid * 32)."""

    node: Node
    name: bytes  # the first name it was found under (b"" for the root)
    parent: PlannedInode | None  # the directory of that name; the root is its own parent
    ino: int
    ftype: int  # the dirent file type
    data: Stored = NO_DATA
    size: int = 0  # i_size (the logical size, whatever the stored form)
    nlink: int = 1
    children: list[PlannedInode] | None = None  # directories: the entries, in bytewise name order
    extended: bool = False
    layout: DataLayout = DataLayout.FLAT_PLAIN
    xattr_body: bytes = b""
    tail_size: int = 0  # bytes stored inline after the inode (FLAT_INLINE)
    nblocks: int = 0  # whole data blocks
    offset: int = 0
    startblk: int = EROFS_NULL_ADDR
    early: int = -1  # index among the files the copier reads before their records (Draft.early)
    streamed: bool = False  # its blocks are placed (and written) as soon as it is cut
    extra: int = 0  # record bytes after the xattr body, before any inline tail (chunk index)

    @property
    def path(self) -> bytes:
        """The image path (relative, b"" for the root), rebuilt from the names up to the root."""
        names = []
        plan = self
        while plan.parent is not None and plan.parent is not plan:
            names.append(plan.name)
            plan = plan.parent
        return b"/".join(reversed(names))

    @property
    def nid(self) -> int:
        return self.offset // EROFS_INODE_SLOT_SIZE

    @property
    def layout_format(self) -> int:
        """i_format: core version and data layout."""
        return _I_FORMAT[self.extended, self.layout]

    @property
    def core_size(self) -> int:
        return INODE_EXTENDED.size if self.extended else INODE_COMPACT.size

    @property
    def record_size(self) -> int:
        """Core, xattr body, the stored form's extra bytes and the inline tail (unpadded)."""
        return self.core_size + len(self.xattr_body) + self.extra + self.tail_size


@dataclass(slots=True)
class Layout:
    """The complete plan of an image, in metadata order."""

    options: WriteOptions
    policy: LayoutPolicy
    inodes: list[PlannedInode]  # sorted by offset
    root: PlannedInode
    build_time_ns: int
    areas: list[Area]  # header areas in offset order; the superblock's bytes come at the end
    xattr_blkaddr: int
    prefix_count: int
    data_start: int  # first data block
    meta_start: int  # first block after the data area (the metadata area's)
    chunk_start: int  # first block of the chunk area (new chunks kept in the image), up to meta_start
    blocks: int  # image size in blocks
    total_data: int  # bytes of file data to copy, for progress
    chunks: ChunkSession | None  # chunked files' placement and their new chunks' copier
    packed: PlannedInode | None = None  # the packed inode (fragments), outside the tree
    shared_pclusters: bool = False  # some extents share a pcluster (dedupe)

    def area(self, name: str) -> Area | None:
        """The planned header area of that name, if the image has one."""
        return next((a for a in self.areas if a.name == name), None)


def collect_inodes(
    root: Directory, stage: DataStage, policy: LayoutPolicy, *, xattrs: bool = True
) -> list[PlannedInode]:
    """Unique inodes breadth first, names in the policy's order, with link counts and parents.

    Every name and node is validated on the way (see validate.py), so nothing is planned for a
    tree that cannot be stored; `xattrs=False` skips xattrs, which are being dropped. Each new
    inode gets its stored form from the data stage.
    """
    check_node(root, b"", xattrs=xattrs)
    planned: dict[int, PlannedInode] = {}
    root_plan = PlannedInode(root, b"", None, 1, FileType.DIR, nlink=2, children=[])
    root_plan.parent = root_plan
    root_plan.data = data = stage.stored_form(root, root_plan)
    root_plan.size = data.size
    planned[id(root)] = root_plan
    order = [root_plan]
    queue: deque[tuple[PlannedInode, bytes]] = deque([(root_plan, b"")])
    while queue:
        dir_plan, dir_path = queue.popleft()
        directory = dir_plan.node
        assert isinstance(directory, Directory)
        children = directory.children
        entries: list[tuple[bytes, PlannedInode]] = []
        for name in policy.names_in_order(children):
            check_name(name, dir_path)
            child = children[name]
            path = dir_path + b"/" + name if dir_path else name
            found = planned.get(id(child))
            if found is not None:
                if found.children is not None:
                    raise InvalidInputError("directory appears under more than one name", show(path))
                found.nlink += 1  # another name for the same node: a hard link
                entries.append((name, found))
                continue
            check_node(child, path, xattrs=xattrs)
            plan = PlannedInode(child, name, dir_plan, len(order) + 1, file_type_of_mode(full_mode(child)))
            plan.data = data = stage.stored_form(child, plan)
            plan.size = data.size
            planned[id(child)] = plan
            order.append(plan)
            entries.append((name, plan))
            if isinstance(child, Directory):
                plan.nlink = 2
                plan.children = []
                dir_plan.nlink += 1
                queue.append((plan, path))
        # Directory blocks list names bytewise, whatever order the policy numbered them in
        # (linear when they already are); the names themselves stay in the directory's shape.
        entries.sort(key=_entry_name)
        dir_plan.children = [entry[1] for entry in entries]
    return order


def _entry_name(entry: tuple[bytes, PlannedInode]) -> bytes:
    return entry[0]


def plan_xattrs(
    inodes: list[PlannedInode], options: WriteOptions, policy: LayoutPolicy
) -> tuple[NameEncoder, SharedArea]:
    """Long prefixes, the shared area and every inode's xattr body."""
    if options.xattrs:
        inodes = [p for p in inodes if p.node.meta.xattrs]  # the rest need no xattr work
    if not options.xattrs or not inodes:
        return NameEncoder(options.xattr_prefixes if options.xattrs else ()), SharedArea(b"", {})
    pairs = choose_shared((p.node.meta.xattrs for p in inodes), policy.xattr_share_threshold)
    prefixes = list(options.xattr_prefixes)
    if options.auto_xattr_prefixes:
        room = MAX_LONG_PREFIXES - len(prefixes)
        prefixes += choose_long_prefixes((p.node.meta.xattrs for p in inodes), pairs, prefixes, room)
    encoder = NameEncoder(prefixes)
    shared = build_shared_area(pairs, encoder)
    ids = {pair: off // 4 for pair, off in shared.offsets.items()}
    for plan in inodes:
        plan.xattr_body = inode_xattr_body(plan.node.meta.xattrs, ids, encoder, show(plan.path))
    return encoder, shared


@dataclass(slots=True)
class Draft:
    """What is fixed before the output is opened: every inode's core, xattrs and shape, and the
    blocks of the early files, whose data can be copied while the rest is planned."""

    options: WriteOptions
    policy: LayoutPolicy
    stage: DataStage
    inodes: list[PlannedInode]  # in inode-number order, the root first
    build_time_ns: int
    encoder: NameEncoder
    shared: SharedArea
    data_start: int  # first data block: the one after the root's record
    # In block order, from data_start; when streaming, files with an inline tail and no block.
    early: list[PlannedInode]
    early_end: int  # first block after them (after the streamed files too, once they are placed)
    root_offset: int  # the root's record: after the superblock and the device table
    packed: PlannedInode | None = None  # the packed inode (fragments), also in `inodes`
    streamed: list[PlannedInode] | None = None  # compressed files still to place, in inode order


def begin_plan(root: Directory, options: WriteOptions, stage: DataStage) -> Draft:
    """Collect and check the tree, shape every inode and place the early files' blocks.

    Files of at least EARLY_MIN_BLOCKS plain blocks (path-backed or re-readable) are early: their
    blocks follow the root's record in inode order. Compressed files, unless fragments or dedupe
    make them depend on each other, are left to `place_streamed` instead (there are no early
    files then: every file over a block is compressed). Every error about the tree that planning
    can find, but for streams of the wrong length and files that fail while being compressed
    (reported as the data stage reaches them), is raised here. With chunking, the data stage
    settles here and every chunk is placed: the device table, before the root's record, must
    know how many devices there are.
    """
    bs = options.block_size
    policy = options.policy or LayoutPolicy.from_options(options)
    inodes = collect_inodes(root, stage, policy, xattrs=options.xattrs)
    build_time_ns = policy.build_time(inodes)
    if not 0 <= build_time_ns < TIME_LIMIT_NS:
        raise InvalidInputError(f"build time {build_time_ns} ns is outside the superblock's range")
    encoder, shared = plan_xattrs(inodes, options, policy)
    policy.choose_cores(inodes, build_time_ns)
    root_offset = ROOT_OFFSET
    configs = compression_configs(options.compression, options.max_pcluster_bytes, bs)
    root_offset += -(-len(configs) // EROFS_INODE_SLOT_SIZE) * EROFS_INODE_SLOT_SIZE
    if stage.chunks is not None:
        stage.settle()
        stage.chunks.resolve()
        root_offset += DEVICE_SLOT.size * len(stage.chunks.devices)
        if root_offset // EROFS_INODE_SLOT_SIZE > 0xFFFF:
            raise InvalidInputError(
                f"{len(stage.chunks.devices)} blob devices leave no room for the root inode"
            )
    packed: PlannedInode | None = None
    streamed: list[PlannedInode] | None = None
    if stage.streaming:
        # Each compressed file is shaped and placed once it is cut (place_streamed), so its
        # blocks can be written while the others are still being compressed.
        streamed = [p for p in inodes if type(p.data) is CompressedData]
        for plan in streamed:
            plan.streamed = True
        shape_inodes([p for p in inodes if not p.streamed], bs, policy, root_offset)
    else:
        if stage.compressor is not None:
            # A compressed file's shape is its compressed size; fragments and shared pclusters
            # are settled once every file is cut.
            packed_data = stage.finish_compression()
            if packed_data is not None:
                packed = packed_inode(packed_data, len(inodes) + 1, build_time_ns, policy)
                inodes.append(packed)
        shape_inodes(inodes, bs, policy, root_offset)
    data_start = -(-(root_offset + inodes[0].record_size) // bs)
    early: list[PlannedInode] = []
    block = data_start
    min_blocks = EARLY_MIN_BLOCKS
    if streamed is None:
        for plan in inodes:
            if plan.nblocks >= min_blocks and type(plan.data) is PlainData:
                plan.early = len(early)
                plan.startblk = block
                block += plan.nblocks
                early.append(plan)
    else:
        # The streamed files come first instead. The files held whole in their records are
        # read ahead (by the copier, while the others are cut), so writing the records later
        # reads nothing.
        for plan in inodes:
            if not plan.nblocks and plan.tail_size and type(plan.data) is PlainData:
                plan.early = len(early)
                early.append(plan)
    return Draft(
        options, policy, stage, inodes, build_time_ns, encoder, shared, data_start, early, block, root_offset,
        packed, streamed,
    )  # fmt: skip


def place_streamed(draft: Draft, write: Callable[[PlannedInode], None] | None = None) -> None:
    """Shape and place the compressed files in inode order from `early_end`, each as soon as the
    data stage has cut it, and hand it to `write` (the emitter's), so compressed data reaches
    the image while later files are still being compressed. Failures of the data stage come in
    its submission order."""
    streamed = draft.streamed
    if streamed is None:
        return
    draft.streamed = None
    stage = draft.stage
    bs = draft.options.block_size
    may_inline = draft.policy.may_inline
    block = draft.early_end
    for plan in streamed:
        form = plan.data
        assert isinstance(form, CompressedData)
        stage.wait_for(form)
        form.shape(plan, bs, may_inline(form))
        if plan.nblocks:
            plan.startblk = block
            block += plan.nblocks
            if block > MAX_BLOCKS:
                raise InvalidInputError(f"the image needs over {MAX_BLOCKS} blocks, the 32-bit limit")
        if write is not None:
            write(plan)
        else:
            stage.spill(form)  # planning only: the pieces stay where an emitter would find them
    draft.early_end = block


def packed_inode(data: Stored, ino: int, build_time_ns: int, policy: LayoutPolicy) -> PlannedInode:
    """The packed inode (FRAGMENTS): a regular file outside the tree, as mkfs.erofs writes it."""
    node = File(meta=Metadata(mode=0o644, mtime_ns=build_time_ns))
    plan = PlannedInode(node, b"", None, ino, FileType.REG_FILE, data=data, size=data.size)
    policy.choose_cores([plan], build_time_ns)
    return plan


def shape_inodes(
    inodes: list[PlannedInode], bs: int, policy: LayoutPolicy, root_offset: int = ROOT_OFFSET
) -> None:
    """Every inode's blocks and inline tail (see `Stored.shape`).

    The root's record stays in the block of `root_offset`, before the data: a tail that would
    not fit there goes to a data block instead.
    """
    may_inline = policy.may_inline
    for plan in inodes:
        data = plan.data
        data.shape(plan, bs, may_inline(data))
    root = inodes[0]
    if root.tail_size and root_offset + root.record_size > (root_offset // bs + 1) * bs:
        root.data.shape(root, bs, False)


def plan_image(root: Directory, options: WriteOptions, stage: DataStage | None = None) -> Layout:
    """Decide everything about the image; raises InvalidInputError for what cannot be stored.

    `stage` is the data stage whose spool and workers the emitter will still need; without
    one, a stage is used and closed here (planning only).
    """
    if stage is None:
        with chunk_session(options) as chunks, stage_for(options, chunks) as own:
            return plan_image(root, options, own)
    return finish_plan(begin_plan(root, options, stage))


def finish_plan(draft: Draft, write: Callable[[PlannedInode], None] | None = None) -> Layout:
    """Place the rest: the other data blocks and the metadata, behind the early files.

    Streamed files are placed first, right after the early files, and handed to `write`.

    Block 0 holds the superblock, the root's record (so its nid fits 16 bits) and small records;
    the data follows from `data_start` (the early files, then the rest in metadata order); the
    metadata area (records, shared xattrs, long prefixes unless they fit block 0) comes last.
    """
    options, inodes, shared = draft.options, draft.inodes, draft.shared
    bs = options.block_size
    place_streamed(draft, write)
    draft.stage.settle()  # streams consumed in full: their errors come before any placement
    chunk_start = draft.early_end + sum(p.nblocks for p in inodes if p.early < 0 and not p.streamed)
    chunks = draft.stage.chunks
    meta_start = chunk_start
    if chunks is not None and chunks.in_image:
        chunks.base = chunk_start
        meta_start += chunks.new_blocks
    root = inodes[0]
    root_offset = root.offset = draft.root_offset
    front = (root_offset + root.record_size, min(draft.data_start, root_offset // bs + 1) * bs)
    first = meta_start * bs
    areas = [Area("superblock", EROFS_SUPER_OFFSET, SUPERBLOCK.size)]
    configs = compression_configs(options.compression, options.max_pcluster_bytes, bs)
    if configs:  # chunks, hence a device table, and compression exclude each other
        areas.append(Area("compression configs", ROOT_OFFSET, len(configs), configs))
    elif root_offset > DEVICE_TABLE_OFFSET:
        areas.append(Area("device table", DEVICE_TABLE_OFFSET, root_offset - DEVICE_TABLE_OFFSET))
    prefix_table = draft.encoder.prefix_table()
    at = 0
    if prefix_table:
        at = -(-front[0] // 4) * 4
        if at + len(prefix_table) <= front[1]:
            front = (at + len(prefix_table), front[1])
        else:
            at = first
            first += len(prefix_table)
        areas.append(Area("long xattr prefixes", at, len(prefix_table), prefix_table))
    rest = inodes[1:]
    sizes = array("L", [p.record_size for p in rest])
    rigid = bytes([p.tail_size > 0 for p in rest])
    packed = pack_records(sizes, rigid, first, bs, len(shared.data), front)
    del sizes, rigid
    for plan, offset in zip(rest, packed.offsets, strict=True):
        plan.offset = offset
    if shared.data:
        areas.append(Area("shared xattrs", packed.shared_offset, len(shared.data), shared.data))
    areas.sort(key=lambda a: a.offset)

    inodes.sort(key=lambda p: p.offset)
    block = draft.early_end
    for plan in inodes:
        if plan.nblocks and plan.early < 0 and not plan.streamed:
            plan.startblk = block
            block += plan.nblocks
    blocks = -(-max(packed.end, areas[-1].end) // bs)
    if blocks > MAX_BLOCKS:
        raise InvalidInputError(f"the image needs {blocks} blocks, over the 32-bit limit")
    if prefix_table and at // 4 > 0xFFFFFFFF:  # xattr_prefix_start counts 4-byte units in 32 bits
        raise InvalidInputError(
            "the long xattr prefixes would lie beyond 16 GiB, out of the superblock's reach"
        )
    return Layout(
        options=options,
        policy=draft.policy,
        inodes=inodes,
        root=root,
        build_time_ns=draft.build_time_ns,
        areas=areas,
        xattr_blkaddr=packed.shared_offset // bs if shared.data else 0,
        prefix_count=len(draft.encoder.long_prefixes) if prefix_table else 0,
        data_start=draft.data_start,
        meta_start=meta_start,
        chunk_start=chunk_start,
        blocks=blocks,
        total_data=sum(p.size for p in inodes if p.data.file_data),
        chunks=chunks,
        packed=draft.packed,
        shared_pclusters=draft.stage.shared_pclusters,
    )
