"""A structural dump: every on-disk structure of an image with its absolute offset and fields.

Each structure is parsed with its construct schema from `erofsgen.format` at its own offset, so
the dump shows exactly what the schema declares; `rebuild_check` then builds every parsed
structure back and compares the bytes, which proves schema and image agree field by field.
Damage never stops a dump: a structure that cannot be read becomes a `DumpError` item and the
walk goes on with the next inode.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import construct as cs

from ..errors import CorruptImageError, ErofsgenError
from ..format.chunk import ChunkBlockMapEntry, ChunkIndex
from ..format.constants import (
    EROFS_DEVT_SLOT_SIZE,
    EROFS_NULL_ADDR,
    EROFS_SUPER_OFFSET,
    ChunkFormat,
    CompressionAlgorithm,
    DataLayout,
    FeatureIncompat,
    FileType,
    InodeVersion,
    LclusterType,
    MapAdvise,
)
from ..format.device import DeviceSlot
from ..format.dirent import DIRENT_SIZE, Dirent, pack_dirent_block
from ..format.inode import INODE_COMPACT, INODE_EXTENDED, InodeCompact, InodeExtended, i_format_version
from ..format.superblock import SUPERBLOCK, SuperBlock
from ..format.xattr import (
    XATTR_ENTRY_HEADER,
    XATTR_IBODY_HEADER,
    SharedXattrId,
    XattrEntry,
    XattrIbodyHeader,
    XattrLongPrefix,
)
from ..format.zmap import (
    COMPRESSION_CONFIGS,
    LCLUSTER_INDEX,
    LCLUSTER_TYPE_MASK,
    MAP_HEADER,
    LclusterIndex,
    MapHeader,
    compact_index_offset,
    compact_layout,
    decode_compacted_bits,
    encode_compacted_pack,
    full_index_offset,
    lobits,
    pack_geometry,
)
from . import dirs
from .datamap import check_bounds, map_uncompressed
from .image import Image
from .inode import InodeInfo
from .names import escape_name
from .walk import walk_dirs
from .xattrs import full_name
from .zmap import ZMap

_SHARED_ID_SIZE = 4
_SharedXattrIdRecord = cs.Struct("id" / SharedXattrId)

# What the packed inode (FRAGMENTS), which no directory names, is shown as.
PACKED_INODE_PATH = "(packed inode)"

# The fixed-size structures by the kind name the dump gives them.
FIXED_SCHEMAS: dict[str, Any] = {
    "superblock": SuperBlock,
    "device slot": DeviceSlot,
    "inode (compact)": InodeCompact,
    "inode (extended)": InodeExtended,
    "xattr ibody header": XattrIbodyHeader,
    "shared xattr id": _SharedXattrIdRecord,
    "chunk index": ChunkIndex,
    "chunk block map entry": ChunkBlockMapEntry,
    "map header": MapHeader,
    "lcluster index": LclusterIndex,
    "dirent": Dirent,
}
_CONFIG_ALIGN = 4
_HEX_FIELDS = frozenset(
    {"magic", "checksum", "feature_compat", "feature_incompat", "i_format", "h_name_filter", "h_advise"}
)
_OCTAL_FIELDS = frozenset({"i_mode"})
_BYTES_SHOWN = 64


# -------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Structure:
    """One on-disk structure: where it is, its decoded fields, and how to rebuild its bytes."""

    kind: str
    offset: int  # absolute byte offset in `location`
    size: int
    fields: dict[str, Any]
    nid: int | None = None
    path: str | None = None
    note: str = ""
    location: str = ""  # "" = the primary image; else "device N" or "decompressed data of nid N"
    raw: bytes = field(default=b"", repr=False)
    rebuild: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DumpError:
    """A structure (or the rest of an inode) that could not be read."""

    kind: str
    message: str
    nid: int | None = None
    offset: int | None = None
    path: str | None = None


Item = Structure | DumpError


def field_offset(item: Structure, name: str) -> int:
    """Absolute offset of field `name` of a fixed-size structure (a kind in FIXED_SCHEMAS)."""
    pos = item.offset
    for sub in FIXED_SCHEMAS[item.kind].subcons:
        if getattr(sub, "name", None) == name:
            return pos
        pos += sub.sizeof()
    raise KeyError(f"{item.kind} has no field {name!r}")


def _fields(container: Any) -> dict[str, Any]:
    return {k: v for k, v in container.items() if not k.startswith("_")}


def _parse(
    image: Image,
    schema: Any,
    kind: str,
    offset: int,
    size: int,
    *,
    nid: int | None = None,
    path: str | None = None,
    note: str = "",
) -> Structure:
    """Read `size` bytes at `offset` of the primary device and parse them with `schema`."""
    raw = image.storage.read(offset, size, area=kind, nid=nid)
    return _parse_bytes(schema, kind, raw, offset, nid=nid, path=path, note=note)


def _parse_bytes(
    schema: Any,
    kind: str,
    raw: bytes,
    offset: int,
    *,
    nid: int | None = None,
    path: str | None = None,
    note: str = "",
    location: str = "",
) -> Structure:
    try:
        container = schema.parse(raw)
    except cs.ConstructError as exc:
        raise CorruptImageError(f"does not parse: {exc}", offset=offset, nid=nid, area=kind) from None
    return Structure(
        kind,
        offset,
        len(raw),
        _fields(container),
        nid=nid,
        path=path,
        note=note,
        location=location,
        raw=raw,
        rebuild=lambda: bytes(schema.build(container)),
    )


def _error(kind: str, exc: ErofsgenError, nid: int | None, path: str | None) -> DumpError:
    offset = exc.offset if isinstance(exc, CorruptImageError) else None
    return DumpError(kind, str(exc), nid=nid, offset=offset, path=path)


# -------------------------------------------------------------------------------- superblock


def superblock_items(image: Image) -> Iterator[Item]:
    """The superblock, its extension slots, compression configs, device slots, long prefixes."""
    sb = image.superblock
    try:
        note = f"block size {sb.block_size}, root nid {sb.root_nid}"
        yield _parse(image, SuperBlock, "superblock", EROFS_SUPER_OFFSET, SUPERBLOCK.size, note=note)
        if sb.sb_extslots:
            off = EROFS_SUPER_OFFSET + SUPERBLOCK.size
            raw = image.storage.read(off, sb.sb_size - SUPERBLOCK.size, area="superblock extension")
            yield Structure("superblock extension slots", off, len(raw), {"raw": raw}, raw=raw)
        if sb.has(FeatureIncompat.COMPR_CFGS):
            yield from _config_items(image, EROFS_SUPER_OFFSET + sb.sb_size)
        base = sb.devt_slotoff * EROFS_DEVT_SLOT_SIZE
        for slot in sb.devices:
            off = base + slot.index * EROFS_DEVT_SLOT_SIZE
            yield _parse(
                image, DeviceSlot, "device slot", off, EROFS_DEVT_SLOT_SIZE, note=f"slot {slot.index}"
            )
        yield from _long_prefix_items(image)
    except ErofsgenError as exc:
        yield _error("superblock area", exc, None, None)


def _config_items(image: Image, start: int) -> Iterator[Item]:
    """COMPR_CFGS records: u16 length, then the algorithm's payload, each 4-byte aligned."""
    offset = start
    for alg in CompressionAlgorithm:
        if not image.superblock.available_compr_algs & (1 << alg):
            continue
        offset = (offset + _CONFIG_ALIGN - 1) & ~(_CONFIG_ALIGN - 1)
        length = int.from_bytes(image.storage.read(offset, 2, area="compression config"), "little")
        schema = COMPRESSION_CONFIGS[alg]
        item = _parse(
            image, schema, f"{alg.name} config", offset + 2, schema.sizeof(), note=f"length {length}"
        )
        yield item
        offset += 2 + (length or 65536)


def _long_prefix_items(image: Image) -> Iterator[Item]:
    sb = image.superblock
    offset = sb.xattr_prefix_start * 4
    for k in range(len(sb.long_prefixes)):
        size = int.from_bytes(image.storage.read(offset, 2, area="xattr long prefix"), "little")
        total = (2 + size + 3) & ~3
        prefix = sb.long_prefixes[k].prefix
        note = escape_name(prefix) if prefix is not None else "unknown base index"
        yield _parse(image, XattrLongPrefix, f"long xattr prefix {k}", offset, total, note=note)
        offset += total


# -------------------------------------------------------------------------------- inodes


def _core_item(image: Image, nid: int, path: str | None) -> Structure:
    sb = image.superblock
    offset = sb.meta_blkaddr * sb.block_size + (nid << 5)
    fmt = int.from_bytes(image.storage.read(offset, 2, area="inode", nid=nid), "little")
    if i_format_version(fmt) == InodeVersion.EXTENDED:
        schema, size, kind = InodeExtended, INODE_EXTENDED.size, "inode (extended)"
    else:
        schema, size, kind = InodeCompact, INODE_COMPACT.size, "inode (compact)"
    return _parse(image, schema, kind, offset, size, nid=nid, path=path)


def _inode_note(info: InodeInfo) -> str:
    return f"{stat.filemode(info.mode)} {info.layout.name} size {info.size}"


def inode_items(image: Image, nid: int, path: str | None = None) -> Iterator[Item]:
    """Every structure belonging to the inode at `nid`: core, xattrs, data map, dirents."""
    try:
        core = _core_item(image, nid, path)
    except ErofsgenError as exc:
        yield _error("inode", exc, nid, path)
        return
    try:
        info = image.inode(nid)
    except ErofsgenError as exc:
        yield core
        yield _error("inode", exc, nid, path)
        return
    yield replace(core, note=_inode_note(info))
    for section in (_xattr_items, _data_items, _dirent_items):
        try:
            yield from section(image, info, path)
        except ErofsgenError as exc:
            yield _error(section.__name__.strip("_").replace("_items", ""), exc, nid, path)


def _xattr_items(image: Image, info: InodeInfo, path: str | None) -> Iterator[Item]:
    if not info.xattr_size:
        return
    nid, sb = info.nid, image.superblock
    header = _parse(
        image, XattrIbodyHeader, "xattr ibody header", info.xattr_offset, XATTR_IBODY_HEADER.size, nid=nid
    )
    yield header
    pos = info.xattr_offset + XATTR_IBODY_HEADER.size
    end = info.xattr_offset + info.xattr_size
    shared_ids = []
    for _ in range(header.fields["h_shared_count"]):
        item = _parse(image, _SharedXattrIdRecord, "shared xattr id", pos, _SHARED_ID_SIZE, nid=nid)
        shared_ids.append(item.fields["id"])
        yield item
        pos += _SHARED_ID_SIZE
    while pos < end:
        entry = _entry_item(image, pos, "xattr entry", nid, limit=end)
        yield entry
        pos += entry.size
    for xid in shared_ids:
        off = sb.xattr_blkaddr * sb.block_size + xid * _SHARED_ID_SIZE
        yield _entry_item(image, off, f"shared xattr entry (id {xid})", nid)


def _entry_item(image: Image, offset: int, kind: str, nid: int, limit: int | None = None) -> Structure:
    head = XATTR_ENTRY_HEADER.unpack(image.storage.read(offset, 4, area=kind, nid=nid), area=kind)
    size = (4 + head.e_name_len + head.e_value_size + 3) & ~3
    if limit is not None and offset + size > limit:
        raise CorruptImageError(
            f"entry of {size} bytes overruns the xattr body", offset=offset, nid=nid, area=kind
        )
    item = _parse(image, XattrEntry, kind, offset, size, nid=nid)
    name = full_name(image.superblock, head.e_name_index, item.fields["e_name"])
    return replace(item, note=escape_name(name) if name is not None else "unknown prefix")


def _data_items(image: Image, info: InodeInfo, path: str | None) -> Iterator[Item]:
    if info.layout == DataLayout.FLAT_INLINE and info.inline_offset is not None and info.size:
        note = ""
        if info.file_type == FileType.SYMLINK:
            note = "target " + escape_name(image.readlink_nid(info.nid))
        fields = {"size": info.inline_size, "startblk": info.startblk}
        yield Structure("inline data", info.inline_offset, info.inline_size, fields, nid=info.nid, note=note)
    elif info.layout == DataLayout.CHUNK_BASED:
        yield from _chunk_items(image, info)
    elif info.compressed:
        yield from _zmap_items(image, info)


def _chunk_items(image: Image, info: InodeInfo) -> Iterator[Item]:
    assert info.chunk_array_offset is not None and info.chunk_format is not None
    check_bounds(image.storage, image.superblock, info)
    indexes = bool(info.chunk_format & ChunkFormat.INDEXES)
    schema = ChunkIndex if indexes else ChunkBlockMapEntry
    kind = "chunk index" if indexes else "chunk block map entry"
    unit = info.chunk_entry_size
    for i in range(info.chunk_count):
        off = info.chunk_array_offset + i * unit
        item = _parse(image, schema, kind, off, unit, nid=info.nid)
        blk = item.fields["startblk_lo" if indexes else "blkaddr"]
        device = item.fields.get("device_id", 0)
        note = f"chunk {i}: " + ("hole" if blk == EROFS_NULL_ADDR else f"device {device} block {blk}")
        yield replace(item, note=note)


def _zmap_items(image: Image, info: InodeInfo) -> Iterator[Item]:
    assert info.map_header_offset is not None
    if not info.size:
        return
    header = _parse(image, MapHeader, "map header", info.map_header_offset, MAP_HEADER.size, nid=info.nid)
    zmap = ZMap(image.storage, image.superblock, info)
    if zmap.whole_fragment:  # no index: the header holds the fragment offset
        yield replace(header, note=f"whole file in the packed inode at {zmap.fragment_offset:#x}")
    else:
        yield replace(header, note=f"advise {header.fields['h_advise']:#x}")
        if info.layout == DataLayout.COMPRESSED_FULL:
            yield from _full_index_items(image, info, zmap)
        else:
            yield from _compact_pack_items(image, info, zmap)
    if zmap.idata_size:
        tail = {"h_idata_size": zmap.idata_size, "head_lcn": zmap.tail_head_lcn}
        yield Structure("inline pcluster", zmap.idata_offset, zmap.idata_size, tail, nid=info.nid)
    for ext in zmap.extents():
        if ext.fragment:
            where = f"packed inode (nid {image.superblock.packed_nid})"
            frag = {"logical": ext.logical, "length": ext.length, "packed_offset": ext.physical}
            yield Structure("fragment", ext.physical, ext.length, frag, nid=info.nid, location=where)
            continue
        fields = {
            "logical": ext.logical,
            "length": ext.length,
            "physical": ext.physical,
            "plen": ext.plen,
            "head_lcn": ext.head_lcn,
            "type": ext.head_type.name,
            "algorithm": ext.algorithm.name if ext.algorithm is not None else "raw",
            "inline": ext.inline,
        }
        yield Structure("extent", ext.physical, ext.plen, fields, nid=info.nid, note="derived from the index")


def _lcluster_note(di_advise: int, di_clusterofs: int, di_u: int) -> str:
    ltype = LclusterType(di_advise & LCLUSTER_TYPE_MASK)
    if ltype == LclusterType.NONHEAD:
        return f"NONHEAD delta0 {di_u & 0xFFFF:#x} delta1 {di_u >> 16}"
    return f"{ltype.name} clusterofs {di_clusterofs} blkaddr {di_u}"


def _full_index_items(image: Image, info: InodeInfo, zmap: ZMap) -> Iterator[Item]:
    start = full_index_offset(info.inode_end)
    reserved = image.storage.read(start - 8, 8, area="map header", nid=info.nid)
    yield Structure("map reserved", start - 8, 8, {"raw": reserved}, nid=info.nid, raw=reserved)
    count = -(-info.size >> zmap.lclusterbits)
    for lcn in range(count):
        off = start + lcn * LCLUSTER_INDEX.size
        item = _parse(image, LclusterIndex, "lcluster index", off, LCLUSTER_INDEX.size, nid=info.nid)
        f = item.fields
        note = f"lcn {lcn}: " + _lcluster_note(f["di_advise"], f["di_clusterofs"], f["di_u"])
        yield replace(item, note=note)


def compact_packs(ebase_end: int, total: int, compacted_2b: bool) -> Iterator[tuple[int, int, int, int]]:
    """(offset, unit, first lcn, entries) of each pack of a compacted index.

    `ebase_end` is the inode end (header and packs follow it); a final 4B pack may be half used.
    """
    layout = compact_layout(ebase_end, total, compacted_2b)
    pos, lcn = layout.ebase, 0
    lead = min(total, layout.initial_4b)
    trailing = total - layout.initial_4b - layout.compacted_2b if total > layout.initial_4b else 0
    for unit, count in ((4, lead), (2, layout.compacted_2b), (4, trailing)):
        vcnt = 2 if unit == 4 else 16
        done = 0
        while done < count:
            n = min(vcnt, count - done)
            yield pos, unit, lcn, n
            pos += vcnt * unit
            lcn += n
            done += n


def _compact_pack_items(image: Image, info: InodeInfo, zmap: ZMap) -> Iterator[Item]:
    bits = zmap.lclusterbits
    nbits = lobits(bits)
    compacted_2b = bool(zmap.advise & MapAdvise.COMPACTED_2B)
    assert compact_index_offset(info.inode_end) == zmap.compact_layout.ebase
    for off, unit, first, used in compact_packs(info.inode_end, zmap.totalidx, compacted_2b):
        vcnt, pack_bytes, encodebits = pack_geometry(unit, bits)
        raw = image.storage.read(off, pack_bytes, area="compacted index pack", nid=info.nid)
        entries = [decode_compacted_bits(raw, encodebits * i, nbits) for i in range(vcnt)]
        base = int.from_bytes(raw[-4:], "little")
        shown = [(LclusterType(t).name, v) for t, v in entries[:used]]
        fields = {"first_lcn": first, "entries": shown, "base": base}

        def rebuild(entries: list[tuple[int, int]] = entries, base: int = base, unit: int = unit) -> bytes:
            return encode_compacted_pack(entries, base, unit, bits)

        kind = f"compacted {unit}B pack"
        note = f"lcn {first}..{first + used - 1}"
        yield Structure(kind, off, pack_bytes, fields, nid=info.nid, note=note, raw=raw, rebuild=rebuild)


def _dirent_items(image: Image, info: InodeInfo, path: str | None) -> Iterator[Item]:
    if not info.is_dir:
        return
    data = image.data_nid(info.nid)
    bs = image.superblock.block_size
    for blkno in range(dirs.block_count(data, bs)):
        start = blkno * bs
        block = data.read(start, min(bs, data.size - start))
        offset, location = _block_location(image, info, start)
        yield from _block_items(image, info, blkno, block, offset, location)


def _block_location(image: Image, info: InodeInfo, start: int) -> tuple[int, str]:
    """Where directory bytes at `start` live: (offset, location) as in Structure."""
    if info.compressed:
        return start, f"decompressed data of nid {info.nid}"
    seg = map_uncompressed(image.storage, image.superblock, info, start)
    if seg.device is None:
        return start, f"hole in nid {info.nid}"
    return seg.physical + (start - seg.logical), "" if seg.device == 0 else f"device {seg.device}"


def _block_items(
    image: Image, info: InodeInfo, blkno: int, block: bytes, offset: int, location: str
) -> Iterator[Item]:
    nid, bs = info.nid, image.superblock.block_size
    try:
        entries = dirs.parse_block(block, bs, nid=nid, blkno=blkno)
    except ErofsgenError as exc:
        yield _error("directory block", exc, nid, None)
        return
    dirents = []
    for k, entry in enumerate(entries):
        raw = block[k * DIRENT_SIZE : (k + 1) * DIRENT_SIZE]
        item = _parse_bytes(Dirent, "dirent", raw, offset + k * DIRENT_SIZE, nid=nid, location=location)
        dirents.append(replace(item, note=escape_name(entry.name)))
    # Rebuild from the stored heads (parse_block maps unknown file types to UNKNOWN).
    packed = [(e.name, d.fields["nid"], d.fields["file_type"]) for e, d in zip(entries, dirents, strict=True)]
    fields = {"blkno": blkno, "entries": len(entries), "bytes": len(block)}
    yield Structure(
        "directory block",
        offset,
        len(block),
        fields,
        nid=nid,
        location=location,
        raw=block,
        rebuild=lambda: pack_dirent_block(packed, len(block)),
    )
    yield from dirents


# -------------------------------------------------------------------------------- whole image


def reachable_nids(image: Image) -> Iterator[tuple[int, bytes]]:
    """(nid, first path) of every inode reachable from the root, breadth first, each once.

    Directories that cannot be listed are skipped (their inode is still yielded).
    """
    root = image.root_nid
    yield root, b"/"
    try:
        if not image.inode(root).is_dir:
            return
    except ErofsgenError:
        return
    seen = {root}
    listing = lambda nid: list(image.scandir_nid(nid))  # noqa: E731
    for visit in walk_dirs(listing, root, breadth_first=True, strict=False, on_error=lambda *_: None):
        for entry in visit.entries:
            if entry.nid in seen:
                continue
            seen.add(entry.nid)
            yield entry.nid, visit.child_path(entry.name)
            try:
                if image.inode(entry.nid).is_dir:
                    visit.descend.append((entry.name, entry.nid))
            except ErofsgenError:
                continue


def iter_image(image: Image) -> Iterator[Item]:
    """Every structure of the image: superblock area, then each reachable inode once."""
    yield from superblock_items(image)
    sb = image.superblock
    if sb.has(FeatureIncompat.FRAGMENTS) and sb.packed_nid:
        yield from inode_items(image, sb.packed_nid, PACKED_INODE_PATH)
    for nid, path in reachable_nids(image):
        yield from inode_items(image, nid, escape_name(path))


@dataclass
class RebuildReport:
    """What `rebuild_check` compared: structure count and the mismatches/parse failures."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every structure rebuilt to identical bytes."""
        return not self.failures


def rebuild_check(image: Image) -> RebuildReport:
    """Parse every structure and build it again with its schema: the bytes must be identical."""
    report = RebuildReport()
    for item in iter_image(image):
        if isinstance(item, DumpError):
            report.failures.append(format_error(item))
            continue
        if item.rebuild is None:
            continue
        report.checked += 1
        built = item.rebuild()
        if built != item.raw:
            diff = next((i for i, (a, b) in enumerate(zip(built, item.raw, strict=False)) if a != b), None)
            where = (
                f"first difference at +{diff}"
                if diff is not None
                else f"{len(built)} != {len(item.raw)} bytes"
            )
            report.failures.append(
                f"{item.kind} @{item.offset:#x} nid {item.nid}: rebuilt bytes differ ({where})"
            )
    return report


# -------------------------------------------------------------------------------- rendering


def _value_text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | bytes | list):
        return str(value)
    if isinstance(value, int):
        if name in _HEX_FIELDS:
            return f"{value:#x}"
        if name in _OCTAL_FIELDS:
            return f"{value:#o}"
        return str(value)
    if isinstance(value, list):
        return " ".join(f"{t}:{v}" for t, v in value)
    if not any(value):
        return f"zeros({len(value)})"
    shown = value[:_BYTES_SHOWN].hex()
    return shown if len(value) <= _BYTES_SHOWN else f"{shown}... ({len(value)} bytes)"


def format_error(item: DumpError) -> str:
    """One line for a DumpError."""
    where = f" @{item.offset:#x}" if item.offset is not None else ""
    nid = f" nid {item.nid}" if item.nid is not None else ""
    return f"error: {item.kind}{nid}{where}: {item.message}"


def format_text(item: Item) -> str:
    """Human-readable lines for one item (no trailing newline)."""
    if isinstance(item, DumpError):
        return format_error(item)
    head = f"{item.kind} @{item.offset:#x} +{item.size}"
    if item.location:
        head += f" in {item.location}"
    if item.nid is not None:
        head += f" nid {item.nid}"
    if item.path is not None:
        head += f" {item.path}"
    if item.note:
        head += f"  ({item.note})"
    lines = [head] + [f"    {k} = {_value_text(k, v)}" for k, v in item.fields.items()]
    return "\n".join(lines)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


def to_json(item: Item) -> dict[str, Any]:
    """A JSON-ready dict for one item (bytes as hex strings)."""
    if isinstance(item, DumpError):
        return {"error": item.message, "kind": item.kind, "nid": item.nid, "offset": item.offset}
    out: dict[str, Any] = {"kind": item.kind, "offset": item.offset, "size": item.size}
    for key in ("nid", "path", "note", "location"):
        value = getattr(item, key)
        if value not in (None, ""):
            out[key] = value
    out["fields"] = {k: _json_value(v) for k, v in item.fields.items()}
    return out


__all__ = [
    "FIXED_SCHEMAS",
    "DumpError",
    "Item",
    "RebuildReport",
    "Structure",
    "compact_packs",
    "escape_name",
    "field_offset",
    "format_error",
    "format_text",
    "inode_items",
    "iter_image",
    "reachable_nids",
    "rebuild_check",
    "superblock_items",
    "to_json",
]
