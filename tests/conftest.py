"""Shared fixtures: kernel mounts, erofs-utils and the scenario trees.

`tests` is a package, so pytest (default "prepend" import mode) puts the repository root on
sys.path and every test imports the harness as `tests.support.<module>`.

With EROFSGEN_REQUIRE_KERNEL=1 (set by CI) a missing kernel mount or erofs-utils fails the
tests that need them instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import settings

from tests.support import erofs_utils as eu
from tests.support import kernel
from tests.support.erofs_utils import ErofsUtils
from tests.support.kernel import MountImage
from tests.support.scenario import build_scenario_tree

REQUIRE_ENV = "EROFSGEN_REQUIRE_KERNEL"

# Two cores shared with other work: wall-clock deadlines would only make tests flaky.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def _unavailable(reason: str) -> NoReturn:
    if _required():
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> list[str]:
    utils = eu.find_erofs_utils()
    tools = f"{utils.version_text} ({utils.mkfs_path})" if utils else "not installed"
    mount = kernel.mount_unavailable_reason()
    return [
        f"erofs-utils: {tools}",
        f"kernel: {kernel.kernel_release()}; erofs loop mounts: {'available' if mount is None else mount}",
        f"{REQUIRE_ENV}={os.environ.get(REQUIRE_ENV, '')}",
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything that mounts is a kernel test, so `-m "not kernel"` deselects it.
    for item in items:
        if "kernel_mount" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def kernel_mount() -> MountImage:
    """`mounted_image`; skips (fails under EROFSGEN_REQUIRE_KERNEL=1) where mounting is impossible."""
    reason = kernel.mount_unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    return kernel.mounted_image


@pytest.fixture
def erofs_utils() -> ErofsUtils:
    """The located erofs-utils; skips (fails under EROFSGEN_REQUIRE_KERNEL=1) when missing."""
    utils = eu.find_erofs_utils()
    if utils is None:
        _unavailable(eu.unavailable_reason() or "erofs-utils unavailable")
    return utils


def _build(tmp_path_factory: pytest.TempPathFactory, name: str, *, long_names: bool) -> Path:
    if os.geteuid() != 0:
        _unavailable("the scenario tree needs root")
    root = tmp_path_factory.mktemp(name) / "tree"
    build_scenario_tree(root, long_names=long_names)
    return root


@pytest.fixture(scope="session")
def scenario_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full scenario tree (4 KiB block edges). Shared by the session: do not modify it."""
    return _build(tmp_path_factory, "scenario", long_names=True)


@pytest.fixture(scope="session")
def scenario_tree_short_names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenario tree without 255-byte names, which erofs-utils 1.5 cannot pack. Read-only."""
    return _build(tmp_path_factory, "scenario_short", long_names=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is private to root)."""
    work = Path(tempfile.mkdtemp(prefix="erofsgen-shared-"))
    os.chmod(work, 0o755)
    try:
        yield work
    finally:
        for root, dirs, _files in os.walk(work):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(work)
