"""The image matrix: scenario trees × producers × judges.

A `Scenario` is a source tree, a `Producer` turns it into an image (erofsgen, mkfs.erofs, ...),
a `Judge` reads the image back one way (kernel mount, fsck.erofs, erofsgen's reader, ...) and
compares with the source. `cases` forms the product, leaving out what a producer or judge
declares it cannot handle, so an exclusion is never a run-time skip: under
EROFSGEN_REQUIRE_KERNEL=1 every generated kernel case must really mount.

A capability extends the matrix by one entry: a producer in `tests/support/producers.py`, a
judge in `tests/support/judges.py`, a scenario in `SCENARIOS` below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.snapshot import TreeSnapshot, snapshot

# Features a tree or image may have that some tool cannot handle. A scenario or producer
# lists the ones it has; a producer or judge lists the ones it cannot take.
LONG_NAMES = "255-byte names"
SMALL_BLOCKS = "blocks smaller than 4096 bytes"
LONG_PREFIXES = "long xattr name prefixes"
# Chunk indexes with holes (all-zero chunks): erofs-utils 1.5 checks them, but its extraction
# cuts a file that ends in a hole short at its last data chunk.
CHUNK_HOLES = "chunk holes"
# The packed inode and shared pclusters (FRAGMENTS/DEDUPE, erofs-utils 1.6, Linux 6.1).
FRAGMENTS = "fragments or dedupe"
# zstd, deflate and lzma: erofs-utils 1.5 as packaged here is built with none of them.
NEW_ALGORITHMS = "zstd, deflate or lzma compression"

# Fixtures (tests/conftest.py) that skip, or fail under EROFSGEN_REQUIRE_KERNEL=1, when the
# machine lacks what they stand for.
KERNEL = "kernel_mount"
EROFS_UTILS = "erofs_utils"


@dataclass(frozen=True)
class Scenario:
    """A source tree, built once per session by a session fixture of tests/conftest.py."""

    name: str
    fixture: str
    features: frozenset[str] = frozenset()
    # A reduced tree that only stands in where the others are excluded, so a (producer, judge)
    # pair is judged on the richest tree it can take, and only once.
    fallback: bool = False


SCENARIOS = (
    Scenario("full", "scenario_tree", frozenset({LONG_NAMES})),
    Scenario("short", "scenario_tree_short_names", fallback=True),
)


def unchanged(expected: TreeSnapshot) -> TreeSnapshot:
    """The expectation of a producer that keeps everything the source has."""
    return expected


@dataclass(frozen=True)
class Producer:
    """One way to make an image from a source tree."""

    name: str
    # make(source, image) writes the image and returns the extra devices it needs, in order.
    make: Callable[[Path, Path], tuple[Path, ...]]
    fixtures: tuple[str, ...] = ()  # what building needs, e.g. EROFS_UTILS for mkfs.erofs
    # Made by the reference tools (erofs-utils): their own checks of it test nothing of ours.
    reference: bool = False
    features: frozenset[str] = frozenset()  # of the image, for judges that cannot read some
    cannot_pack: frozenset[str] = frozenset()  # scenario features this producer cannot take
    # What it changes on purpose (e.g. -T N sets every mtime): the source snapshot → expected.
    expect: Callable[[TreeSnapshot], TreeSnapshot] = unchanged
    ignore: tuple[str, ...] = ()  # Entry fields it does not keep (compared by no judge)
    # A property of this producer's images beyond the round trip (block size, size bound).
    check: Callable[[Built, ImageCache], None] | None = None
    slow: bool = False  # its cells belong to the suite's long tail (see `cases`)


@dataclass(frozen=True)
class Built:
    """An image a producer made from a scenario tree, and what reading it back must give."""

    scenario: Scenario
    producer: Producer
    source: Path
    image: Path
    devices: tuple[Path, ...]
    expected: TreeSnapshot  # the source snapshot as the producer says it reads back


class Context:
    """What a judge may use besides the image: a scratch directory, captured output, fixtures."""

    def __init__(
        self,
        tmp: Path,
        capsys: pytest.CaptureFixture[str],
        images: ImageCache,
        request: pytest.FixtureRequest,
    ) -> None:
        self.tmp, self.capsys, self.images, self._request = tmp, capsys, images, request

    def kernel_mount(self) -> MountImage:
        """The `kernel_mount` fixture (a judge that uses it lists KERNEL in its fixtures)."""
        mount: MountImage = self._request.getfixturevalue(KERNEL)
        return mount

    def erofs_utils(self) -> ErofsUtils:
        """The `erofs_utils` fixture (a judge that uses it lists EROFS_UTILS in its fixtures)."""
        utils: ErofsUtils = self._request.getfixturevalue(EROFS_UTILS)
        return utils


@dataclass(frozen=True)
class Judge:
    """One way to read an image back; `run` raises AssertionError when it disagrees."""

    name: str
    run: Callable[[Built, Context], None]
    fixtures: tuple[str, ...] = ()
    cannot_read: frozenset[str] = frozenset()  # scenario or image features it cannot handle
    applies: Callable[[Producer], bool] = lambda producer: True
    slow: bool = False  # its cells belong to the suite's long tail (see `cases`)


@dataclass(frozen=True)
class Case:
    """One cell of the matrix."""

    scenario: Scenario
    producer: Producer
    judge: Judge
    slow: bool = False  # marked `slow`: `-m 'not slow'` leaves it out

    @property
    def id(self) -> str:
        """The test id, `scenario-producer-judge`."""
        return f"{self.scenario.name}-{self.producer.name}-{self.judge.name}"

    @property
    def fixtures(self) -> tuple[str, ...]:
        """The fixtures building and judging need: requested before either starts."""
        return (*self.producer.fixtures, *self.judge.fixtures)


def _fits(scenario: Scenario, producer: Producer, judge: Judge) -> bool:
    if producer.cannot_pack & scenario.features:
        return False
    return not judge.cannot_read & (scenario.features | producer.features)


def cases(
    scenarios: Iterable[Scenario], producers: Iterable[Producer], judges: Iterable[Judge]
) -> list[Case]:
    """Every judge on every producer, on the richest scenario the pair can take.

    Non-fallback scenarios are all used; a fallback one only for pairs no other fits. Cells
    of one image come together, so a session builds and judges image by image. A cell is slow
    when its producer or judge is, except for the first producer's: a quick run still sees
    every judge.
    """
    scenarios = list(scenarios)
    out: list[Case] = []
    for i, producer in enumerate(producers):
        for judge in filter(lambda j: j.applies(producer), judges):
            usable = [s for s in scenarios if _fits(s, producer, judge)]
            chosen = [s for s in usable if not s.fallback] or usable[:1]
            slow = i > 0 and (producer.slow or judge.slow)
            out.extend(Case(s, producer, judge, slow) for s in chosen)
    order = {s.name: i for i, s in enumerate(scenarios)}
    return sorted(out, key=lambda c: order[c.scenario.name])  # stable: producer order stays


class ImageCache:
    """Images and source snapshots, each made once per session, in a session temp directory."""

    def __init__(self, root: Path, producers: Mapping[str, Producer]) -> None:
        self.root = root
        self.producers = producers
        self._images: dict[tuple[str, str], Built] = {}
        self._snapshots: dict[Path, TreeSnapshot] = {}

    def source_snapshot(self, source: Path) -> TreeSnapshot:
        """The snapshot of a scenario tree (shared by the session: do not modify the trees)."""
        if source not in self._snapshots:
            self._snapshots[source] = snapshot(source)
        return self._snapshots[source]

    def get(self, scenario: Scenario, producer: Producer | str, source: Path) -> Built:
        """The image `producer` makes of `scenario` (whose tree is at `source`)."""
        if isinstance(producer, str):
            producer = self.producers[producer]
        key = (scenario.name, producer.name)
        if key not in self._images:
            workdir = self.root / f"{scenario.name}-{producer.name}"
            workdir.mkdir(exist_ok=True)  # a build that failed in an earlier cell is retried
            image = workdir / "image"
            devices = producer.make(source, image)
            expected = producer.expect(self.source_snapshot(source))
            self._images[key] = Built(scenario, producer, source, image, devices, expected)
        return self._images[key]

    def sibling(self, built: Built, producer: str) -> Built:
        """Another producer's image of the same scenario, e.g. the default one to compare sizes."""
        return self.get(built.scenario, producer, built.source)


def blank(expected: TreeSnapshot, **fields: object) -> TreeSnapshot:
    """`expected` with the given Entry fields set to one value on every path."""
    entries = {p: dataclasses.replace(e, **fields) for p, e in expected.entries.items()}  # type: ignore[arg-type]
    return TreeSnapshot(entries, expected.hardlinks)
