"""Dedupe (-E dedupe): extents of any files share one pcluster where their pclusters are identical.

After every file is cut (in file order, on the main thread, so the result does not depend on
the workers), each pcluster of a `FragmentedData` file is hashed; one already written by an
earlier file, or earlier in the same file, is not written again: the extent's head names the
first one's block instead. Files that do not compress take part too: their raw blocks are
PLAIN pclusters, so identical copies of them cost no blocks at all. Only extents of the same
length share, and identical pclusters decode to identical data, so no extent needs
PARTIAL_REF. A file with shared extents needs full indexes (each head holds its block
address); the file owning a shared pcluster is pinned compressed. The superblock then carries
DEDUPE (the FRAGMENTS bit). See specs/compression.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .fragments import FragmentedData, Share

if TYPE_CHECKING:
    from .plan import PlannedInode


def share_pclusters(forms: Iterable[tuple[FragmentedData, PlannedInode]], block_size: int) -> bool:
    """Point every repeated pcluster at its first copy; True if any extent was shared."""
    first: dict[bytes, tuple[FragmentedData, Share]] = {}
    any_shared = False
    forms = list(forms)
    for form, plan in forms:
        if not form.nblocks:  # cut into no pclusters (all fragment, or not cut at all)
            continue
        shared: list[Share | None] = []
        own = 0
        at = form.spool_offset
        starts = form.starts
        ends = [*starts[1:], form.tail_start if form.tail_start >= 0 else form.size]
        for j, blocks in enumerate(form.nblocks):
            size = blocks * block_size
            data = os.pread(form.spool_fd, size, at)
            if len(data) != size:
                raise AssertionError("the spool is shorter than the pclusters written to it")
            at += size
            # The extent's length too: a raw pcluster holds the same bytes for a shorter extent
            # whose block ends in zeros, and sharing it would need PARTIAL_REF-like care.
            key = hashlib.sha256(data).digest() + (ends[j] - starts[j]).to_bytes(4, "little")
            hit = first.get(key)
            if hit is None:
                first[key] = (form, (plan, own))
                shared.append(None)
                own += blocks
            else:
                hit[0].pinned = True
                shared.append(hit[1])
        if own != form.blocks:
            form.shared = shared
            form.own_blocks = own
            any_shared = True
    for form, _plan in forms:
        # A file that compresses to nothing but raw blocks keeps them as PLAIN pclusters where
        # they are shared: its copies then cost no blocks at all.
        if form.pinned or form.shared is not None:
            form.compressed = True
    return any_shared
