"""Layout policy: the decisions in which producers of EROFS images differ, as one value.

The pipeline (data stage, plan, emit) asks the policy and never hard-codes these choices: the
build time, which inodes get a compact core, which data may go inline, the order of names, and
when an xattr is shared. `LayoutPolicy.from_options` is erofsgen's default and reproduces its
images; another producer (a composefs-compatible layout) is another instance or a subclass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import InodeFormat, WriteOptions

if TYPE_CHECKING:
    from .plan import PlannedInode
    from .stored import Stored

COMPACT_LIMIT = 0xFFFF  # nlink, uid and gid of a compact inode are 16 bits
TIME_LIMIT_NS = 2**64 * 10**9  # the superblock's epoch is an unsigned 64-bit count of seconds


@dataclass(frozen=True, slots=True)
class LayoutPolicy:
    """Producer-specific layout choices (see the module docstring)."""

    build_time_ns: int | None = None  # None: the most common mtime an inode could share
    inode_format: InodeFormat = InodeFormat.AUTO
    inline_files: bool = True  # False: regular files never get an inline tail (-E noinline_data)
    xattr_share_threshold: int = 2  # a pair on more than this many inodes goes to the shared area

    @classmethod
    def from_options(cls, options: WriteOptions) -> LayoutPolicy:
        """erofsgen's default policy for these options."""
        return cls(
            build_time_ns=options.build_time_ns,
            inode_format=options.inode_format,
            inline_files=options.inline_data,
            xattr_share_threshold=options.xattr_share_threshold,
        )

    def names_in_order(self, names: Iterable[bytes]) -> list[bytes]:
        """The order children are numbered in: bytewise (directory blocks always are, for the kernel)."""
        return sorted(names)

    def build_time(self, inodes: Sequence[PlannedInode]) -> int:
        """The superblock's time base: given, or the most common mtime (ties: the earliest).

        Only inodes a compact core could hold count, so the choice makes most inodes compact.
        """
        if self.build_time_ns is not None:
            return self.build_time_ns
        counts = Counter(
            p.node.meta.mtime_ns
            for p in inodes
            if 0 <= p.node.meta.mtime_ns < TIME_LIMIT_NS and compact_fits(p)
        )
        if not counts:
            return 0
        best = max(counts.values())
        return min(t for t, n in counts.items() if n == best)

    def choose_cores(self, inodes: Iterable[PlannedInode], build_time_ns: int) -> None:
        """Give each inode a compact (32-byte) or extended (64-byte) core.

        Compact when its fields fit 16/32 bits and (AUTO) its mtime is the build time.
        """
        fmt = self.inode_format
        every = fmt is InodeFormat.EXTENDED
        by_time = fmt is InodeFormat.AUTO
        for plan in inodes:
            meta = plan.node.meta
            plan.extended = (
                every
                or (by_time and meta.mtime_ns != build_time_ns)
                or plan.size > 0xFFFFFFFF
                or plan.nlink > COMPACT_LIMIT
                or meta.uid > COMPACT_LIMIT
                or meta.gid > COMPACT_LIMIT
            )

    def may_inline(self, stored: Stored) -> bool:
        """Whether this data may keep its tail inline after the inode."""
        return self.inline_files or not stored.file_data


def compact_fits(plan: PlannedInode) -> bool:
    """Whether a compact core's 16/32-bit fields hold the inode (its mtime aside)."""
    meta = plan.node.meta
    return plan.size <= 0xFFFFFFFF and max(plan.nlink, meta.uid, meta.gid) <= COMPACT_LIMIT
