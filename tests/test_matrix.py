"""The image matrix: every scenario tree × producer × judge that fits (tests/support/matrix.py).

One cell, `scenario-producer-judge`, builds (once per session) the image the producer makes of
the scenario tree and lets the judge read it back against the source. Combinations a producer
or judge declares it cannot handle are not generated; the tests at the end pin down which.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.judges import JUDGES
from tests.support.matrix import (
    KERNEL,
    SCENARIOS,
    Built,
    Case,
    Context,
    ImageCache,
    Judge,
    Producer,
    Scenario,
    cases,
)
from tests.support.producers import PRODUCERS

CASES = cases(SCENARIOS, PRODUCERS, JUDGES)
IDS = {case.id for case in CASES}


def _param(case: Case) -> object:
    marks = [pytest.mark.kernel] if KERNEL in case.fixtures else []
    return pytest.param(case, id=case.id, marks=[*marks, *([pytest.mark.slow] if case.slow else [])])


@pytest.fixture(scope="session")
def matrix_images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    """Every image of the matrix, built on first use and kept for the session."""
    return ImageCache(tmp_path_factory.mktemp("matrix"), {p.name: p for p in PRODUCERS})


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_matrix(
    case: Case,
    request: pytest.FixtureRequest,
    matrix_images: ImageCache,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for fixture in case.fixtures:  # skips (or fails, when required) before any work
        request.getfixturevalue(fixture)
    source: Path = request.getfixturevalue(case.scenario.fixture)
    built = matrix_images.get(case.scenario, case.producer, source)
    capsys.readouterr()  # what building printed is not the judge's business
    case.judge.run(built, Context(tmp_path, capsys, matrix_images, request))


def test_ids_are_unique() -> None:
    assert len(IDS) == len(CASES)
    assert all(case.id.count("-") == 2 for case in CASES)


def test_every_producer_meets_every_tool_independent_judge() -> None:
    for producer in PRODUCERS:
        judged = {case.judge.name for case in CASES if case.producer is producer}
        assert {"kernel", "reader", "extract", "check", "schema"} <= judged, producer.name
        if producer.check is not None:
            assert "properties" in judged, producer.name


def test_quick_runs_see_every_judge() -> None:
    quick = [case for case in CASES if not case.slow]
    assert {case.judge.name for case in quick} == {judge.name for judge in JUDGES}
    assert all(case.slow for case in CASES if case.producer.reference)  # the mkfs.erofs matrix


def test_declared_exclusions() -> None:
    # The richest tree each pair can take, and only that one.
    assert {"full-erofsgen_default-kernel", "short-erofsgen_default-fsck"} <= IDS
    assert not {"short-erofsgen_default-kernel", "full-erofsgen_default-fsck"} & IDS
    # mkfs.erofs 1.5 cannot pack 255-byte names: its images are all of the short tree.
    assert {case.scenario.name for case in CASES if case.producer.name.startswith("mkfs_")} == {"short"}
    assert "short-mkfs_chunks_64k_blob-kernel" in IDS
    # fsck.erofs --extract is spent on erofsgen's images only.
    assert "short-erofsgen_default-fsck_extract" in IDS
    assert not {c.id for c in CASES if c.judge.name == "fsck_extract" and c.producer.reference}
    # erofs-utils 1.5 reads neither small blocks nor long xattr prefixes.
    for name in ("erofsgen_b512", "erofsgen_xattr_prefixes", "erofsgen_xattr_prefix_auto"):
        judged = {case.judge.name for case in CASES if case.producer.name == name}
        assert not judged & {"fsck", "dump_erofs"}, name
        assert "kernel" in judged


def test_cases_take_the_richest_fitting_scenario() -> None:
    def make(source: Path, image: Path) -> tuple[Path, ...]:
        return ()

    def run(built: Built, ctx: Context) -> None:
        pass

    rich = Scenario("rich", "f", frozenset({"x"}))
    other = Scenario("other", "f")
    poor = Scenario("poor", "f", fallback=True)
    plain, no_x = Producer("plain", make), Producer("no_x", make, cannot_pack=frozenset({"x"}))
    odd = Producer("odd", make, features=frozenset({"y"}))
    judges = [
        Judge("any", run),
        Judge("no_y", run, cannot_read=frozenset({"y"})),
        Judge("none", run, applies=lambda producer: False),
    ]
    got = [c.id for c in cases([rich, other, poor], [plain, no_x, odd], judges)]
    assert got == [
        "rich-plain-any",
        "rich-plain-no_y",
        "rich-odd-any",
        "other-plain-any",
        "other-plain-no_y",
        "other-no_x-any",
        "other-no_x-no_y",
        "other-odd-any",
    ]
    # The fallback stands in only where nothing else fits.
    assert [c.id for c in cases([rich, poor], [no_x], judges[:1])] == ["poor-no_x-any"]
