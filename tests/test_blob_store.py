"""The blob store: segment and cache formats, publishing, lookup, locking, crash safety,
concurrency, read-only use, and maintenance (verify, repair, gc, du).

Real images with a store device table come from mkfs.erofs (`--chunksize --blobdev`) with the
device slot's tag and size patched to the blob's digest (`tagged_image`), since erofs-utils
1.5 writes an empty tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import struct
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erofsgen.blobs import BlobStore, ChunkLocation, StoreError
from erofsgen.blobs import store as store_module
from erofsgen.blobs.cache import CacheFile, decode_cache, encode_cache
from erofsgen.blobs.maintenance import collect_garbage, referenced_blobs, verify_store
from erofsgen.blobs.segment import SegmentFile, decode_segment, encode_segment
from erofsgen.format.constants import DataLayout, FeatureCompat, FileType
from erofsgen.format.superblock import SUPERBLOCK, sb_checksum
from erofsgen.reader import open_image
from erofsgen.reader.datamap import iter_chunk_entries
from tests.support.erofs_utils import ErofsUtils

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop to another user)")
BS = 4096


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def chunk_data(label: str, size: int = 3000) -> bytes:
    """Distinct, deterministic bytes per label."""
    blocks = (hashlib.sha256(f"{label}/{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore.open(tmp_path / "store", writable=True, create=True)


def publish_blob(
    store: BlobStore, chunks: list[bytes], block_size: int = BS
) -> tuple[str, list[ChunkLocation]]:
    """Write `chunks` into one new blob, each on a block boundary; returns digest and locations."""
    records = []
    content = bytearray()
    for chunk in chunks:
        records.append((sha(chunk), len(content), len(chunk)))
        content += chunk + bytes(-len(chunk) % block_size)
    digest = hashlib.sha256(content).hexdigest()
    with store.new_blob() as pending:
        os.pwrite(pending.fd, content, 0)
        pending.publish(digest, block_size, records)
    return digest, [ChunkLocation(digest, offset, length) for _c, offset, length in records]


def problems_of(store: BlobStore) -> list[str]:
    return [str(f) for f in store.verify().problems]


# -- segment format ----------------------------------------------------------------------


@st.composite
def segments(draw: st.DrawFn) -> tuple[str, int, int, list[tuple[bytes, int, int]]]:
    block_size = draw(st.sampled_from([512, 1024, 4096, 65536]))
    blocks = draw(st.integers(1, 64))
    blob_size = blocks * block_size
    records = []
    for _ in range(draw(st.integers(0, 20))):
        start = draw(st.integers(0, blocks - 1))
        length = draw(st.integers(1, blob_size - start * block_size))
        records.append((draw(st.binary(min_size=32, max_size=32)), start * block_size, length))
    blob = draw(st.binary(min_size=32, max_size=32)).hex()
    return blob, block_size, blob_size, records


@given(segments())
def test_segment_codec_matches_the_schema(
    case: tuple[str, int, int, list[tuple[bytes, int, int]]],
) -> None:
    blob, block_size, blob_size, records = case
    data = encode_segment(blob, block_size, blob_size, records)
    assert len(data) == 64 + 48 * len(records) + 32
    parsed = SegmentFile.parse(data)
    body = parsed.body.value
    assert (body.magic, body.version, body.block_size, body.blob, body.blob_size) == (
        b"EROFSGIX",
        1,
        block_size,
        bytes.fromhex(blob),
        blob_size,
    )
    assert [(r.chunk, r.offset, r.length) for r in body.records] == records
    assert parsed.checksum == hashlib.sha256(data[:-32]).digest()
    assert SegmentFile.build({"body": {"value": body}}) == data
    decoded = decode_segment(data, f"/s/index/{blob}")
    assert decoded.records == records
    assert (decoded.blob, decoded.block_size, decoded.blob_size) == (blob, block_size, blob_size)


def _valid_segment() -> tuple[bytes, str]:
    blob = "ab" * 32
    return encode_segment(blob, BS, 2 * BS, [(sha(b"x"), 0, 10), (sha(b"y"), BS, BS)]), blob


def _reseal(data: bytes) -> bytes:
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: b"EROFSGIY" + d[8:], "bad magic"),
        (lambda d: _reseal(d[:8] + struct.pack("<I", 2) + d[12:]), "version 2"),
        (lambda d: d[:-1], "records need"),
        (lambda d: d + b"\0", "records need"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum mismatch"),
        (lambda d: d[:70] + bytes([d[70] ^ 1]) + d[71:], "checksum mismatch"),
        (lambda d: _reseal(d[:16] + bytes(32) + d[48:]), "describes blob 0000"),
        (lambda d: _reseal(d[: 64 + 48 + 32] + struct.pack("<Q", 4 * BS) + d[64 + 48 + 40 :]), "record 1"),
        (lambda d: b"", "too short"),
    ],
)
def test_damaged_segment_is_refused_naming_the_file(damage: Callable[[bytes], bytes], message: str) -> None:
    data, blob = _valid_segment()
    path = f"/store/index/{blob}"
    with pytest.raises(StoreError, match=message) as info:
        decode_segment(damage(data), path)
    assert str(info.value).startswith(path + ": ")


def test_encode_segment_refuses_what_decode_would() -> None:
    with pytest.raises(StoreError, match="multiple of the block size"):
        encode_segment("ab" * 32, BS, BS + 1, [])
    with pytest.raises(StoreError, match="block-aligned"):
        encode_segment("ab" * 32, BS, 2 * BS, [(sha(b"x"), 512, 10)])
    with pytest.raises(StoreError, match="block-aligned"):
        encode_segment("ab" * 32, BS, BS, [(sha(b"x"), 0, BS + 1)])
    with pytest.raises(StoreError, match="64 lowercase hex"):
        encode_segment("AB" * 32, BS, BS, [])


# -- opening -----------------------------------------------------------------------------


def test_create_makes_the_layout(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = BlobStore.open(path, writable=True, create=True)
    assert store.path == str(path) and store.writable
    assert json.loads((path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for sub in ("blobs/sha256", "index", "tmp", "cache"):
        assert (path / sub).is_dir()
    assert (path / "lock").is_file()
    assert not list((path / "tmp").iterdir())  # the write probe is gone
    BlobStore.open(path, writable=True, create=True)  # again: nothing changes
    assert BlobStore.open(path).writable is False


def test_open_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store directory") as info:
        BlobStore.open(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a blob store") as info:
        BlobStore.open(tmp_path / "plain", writable=True)
    assert str(tmp_path / "plain") in str(info.value)
    with pytest.raises(StoreError, match="created writable"):
        BlobStore.open(tmp_path / "new", create=True)


def test_writable_open_fills_in_a_minimal_oci_layout(tmp_path: Path) -> None:
    (tmp_path / "oci" / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "oci" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    assert BlobStore.open(tmp_path / "oci").locate(sha(b"x"), BS) is None  # no index yet
    store = BlobStore.open(tmp_path / "oci", writable=True)
    assert (tmp_path / "oci" / "index").is_dir() and (tmp_path / "oci" / "lock").exists()
    assert store.put(b"data").offset == 0


def test_blob_path_validates_the_digest(store: BlobStore) -> None:
    digest = "0f" * 32
    assert store.blob_path(digest) == os.path.join(store.path, "blobs", "sha256", digest)
    for bad in ("0F" * 32, "0f" * 31, "../" + "0" * 61, "g" * 64):
        with pytest.raises(StoreError, match="not a SHA-256 digest"):
            store.blob_path(bad)
    assert not store.contains(digest)


# -- publishing and lookup ---------------------------------------------------------------


def test_put_stores_once_and_locate_finds_it(store: BlobStore) -> None:
    data = chunk_data("a", 5000)
    location = store.put(data)
    assert location == ChunkLocation(hashlib.sha256(data + bytes(3192)).hexdigest(), 0, 5000)
    assert store.put(data) == location
    assert len(store.blob_names()) == 1
    assert Path(store.blob_path(location.blob)).read_bytes() == data + bytes(3192)
    assert store.contains(location.blob)
    fresh = BlobStore.open(store.path)
    assert fresh.locate(sha(data), BS) == location
    assert fresh.locate(sha(b"other"), BS) is None
    assert not store.temp_names()
    assert oct(os.stat(store.blob_path(location.blob)).st_mode & 0o777) == "0o644"


def test_locate_sees_blobs_published_after_loading(store: BlobStore) -> None:
    assert store.locate(sha(b"late"), BS) is None  # loads the (empty) index
    digest, [location] = publish_blob(store, [b"late"])
    assert store.locate(sha(b"late"), BS) == location
    assert location.blob == digest


def test_locate_keeps_the_best_aligned_copy(store: BlobStore) -> None:
    small = chunk_data("small", 100)
    # A 512-byte-block blob holds `small` at offset 512 only; a 4096-block blob at 4096.
    publish_blob(store, [chunk_data("pad", 512), small], block_size=512)
    assert BlobStore.open(store.path).locate(sha(small), BS) is None
    assert BlobStore.open(store.path).locate(sha(small), 512) is not None
    _, [_, aligned] = publish_blob(store, [chunk_data("pad2", 4096), small])
    for _ in range(2):  # whatever the names' order, the 4096-aligned copy is the answer
        assert BlobStore.open(store.path).locate(sha(small), BS) == aligned
        assert BlobStore.open(store.path).locate(sha(small), 512) == aligned
    assert store.locate(sha(small), BS) == aligned  # merged on publish as well


def test_a_copy_must_fit_the_blob_in_whole_blocks(store: BlobStore) -> None:
    # At offset 0 but in a 512-byte blob: a 4096-byte block would run past the blob's end.
    digest, [location] = publish_blob(store, [b"tiny"], block_size=512)
    assert os.path.getsize(store.blob_path(digest)) == 512
    assert BlobStore.open(store.path).locate(sha(b"tiny"), BS) is None
    assert BlobStore.open(store.path).locate(sha(b"tiny"), 1024) is None
    assert BlobStore.open(store.path).locate(sha(b"tiny"), 512) == location
    assert store.locate(sha(b"tiny"), BS) is None
    _, [whole] = publish_blob(store, [b"tiny"])
    assert BlobStore.open(store.path).locate(sha(b"tiny"), BS) == whole
    assert BlobStore.open(store.path).locate(sha(b"tiny"), 512) == whole


@pytest.mark.parametrize(
    ("offset", "length", "blob_size", "usable"),
    [
        (0, 1, 65536 * 4, 65536),
        (0, 100, 512, 512),
        (0, 4096, 4096, 4096),
        (4096, 4096, 3 * 4096, 4096),
        (8192, 4097, 16384, 8192),
        (8192, 4097, 8192 + 4608, 512),  # only 512-byte blocks fit: 9 of them
        (1024, 10, 2048, 1024),
    ],
)
def test_usable_block_size(offset: int, length: int, blob_size: int, usable: int) -> None:
    assert store_module.usable_block_size(offset, length, blob_size) == usable


def test_publish_of_an_existing_blob_keeps_it_and_restores_its_segment(store: BlobStore) -> None:
    digest, [location] = publish_blob(store, [b"same"])
    os.unlink(store.segment_path(digest))
    digest2, _ = publish_blob(store, [b"same"])
    assert digest2 == digest
    assert os.path.exists(store.segment_path(digest))
    assert not store.temp_names()
    assert BlobStore.open(store.path).locate(sha(b"same"), BS) == location


def test_publish_refuses_a_partial_block(store: BlobStore) -> None:
    with store.new_blob() as pending:
        os.write(pending.fd, b"x" * 100)
        with pytest.raises(StoreError, match="not a multiple of the block size"):
            pending.publish(hashlib.sha256(b"x" * 100).hexdigest(), BS, [(sha(b"x" * 100), 0, 100)])
        assert os.path.exists(pending.path)
    assert not os.path.exists(pending.path) and not store.blob_names()
    pending.discard()  # idempotent


def test_read_only_store_refuses_writes(store: BlobStore) -> None:
    reader = BlobStore.open(store.path)
    with pytest.raises(StoreError, match="read-only"):
        reader.new_blob()
    with pytest.raises(StoreError, match="read-only"):
        reader.put(b"x")


def test_locate_skips_segments_without_their_blob(store: BlobStore) -> None:
    digest, _ = publish_blob(store, [b"gone"])
    os.unlink(store.blob_path(digest))
    assert BlobStore.open(store.path).locate(sha(b"gone"), BS) is None


def test_locate_raises_on_a_damaged_segment(store: BlobStore) -> None:
    digest, _ = publish_blob(store, [b"a"])
    path = store.segment_path(digest)
    Path(path).write_bytes(Path(path).read_bytes()[:-1])
    with pytest.raises(StoreError, match="damaged index segment") as info:
        BlobStore.open(store.path).locate(sha(b"a"), BS)
    assert str(info.value).startswith(f"{path}: ")
    assert str(info.value).endswith(f"(`erofsgen store verify --repair {store.path}` removes it)")


def test_locate_raises_when_the_blob_size_disagrees(store: BlobStore) -> None:
    digest, _ = publish_blob(store, [b"a"])
    with open(store.blob_path(digest), "ab") as file:
        file.write(bytes(BS))
    with pytest.raises(StoreError, match="blob has 8192") as info:
        BlobStore.open(store.path).locate(sha(b"a"), BS)
    assert store.segment_path(digest) in str(info.value)


def test_loading_100k_records_is_fast(store: BlobStore) -> None:
    count = 100_000
    records = [(sha(i.to_bytes(4, "little")), i * BS, BS) for i in range(count)]
    digest = "cd" * 32
    with open(store.blob_path(digest), "wb") as file:
        file.truncate(count * BS)  # sparse: only the size matters to locate
    Path(store.segment_path(digest)).write_bytes(encode_segment(digest, BS, count * BS, records))
    reader = BlobStore.open(store.path)
    started = time.perf_counter()
    assert reader.locate(records[-1][0], BS) == ChunkLocation(digest, (count - 1) * BS, BS)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    for chunk, _offset, _length in records:
        assert reader.locate(chunk, BS) is not None
    lookups = time.perf_counter() - started
    assert loaded < 0.8, f"loading 100k records took {loaded:.2f} s"
    assert lookups < 0.5, f"100k lookups took {lookups:.2f} s"


# -- locking -----------------------------------------------------------------------------


def test_exclusive_lock_waits_for_packs(store: BlobStore) -> None:
    events: list[str] = []
    got = threading.Event()

    def gc() -> None:
        with store.exclusive_lock():
            events.append("gc")
            got.set()

    with store.pack_lock(), BlobStore.open(store.path).pack_lock():  # shared locks coexist
        thread = threading.Thread(target=gc)
        thread.start()
        assert not got.wait(0.2)
        events.append("packs done")
    thread.join(5)
    assert events == ["packs done", "gc"]


def test_read_only_store_without_a_lock_file_locks_nothing(tmp_path: Path) -> None:
    store = BlobStore.open(tmp_path / "s", writable=True, create=True)
    os.unlink(tmp_path / "s" / "lock")
    reader = BlobStore.open(tmp_path / "s")
    with reader.pack_lock():
        pass
    with pytest.raises(StoreError, match="no lock file"), reader.exclusive_lock():
        pass
    assert store.path


# -- concurrency and crashes -------------------------------------------------------------

SHARED = [chunk_data(f"shared{i}") for i in range(4)]


def _worker_chunks(worker: str) -> list[bytes]:
    return [chunk_data(f"{worker}-{i}", 1000 + 97 * i) for i in range(8)]


def _pack_like(path: str, worker: str) -> None:
    """What a pack does: one blob of new chunks (plus shared ones every worker has) and a few put()s."""
    store = BlobStore.open(path, writable=True)
    with store.pack_lock():
        publish_blob(store, [*SHARED, *_worker_chunks(worker)[:4]])
        publish_blob(store, SHARED[::-1])  # the same blob in every worker: renames race
    for chunk in _worker_chunks(worker)[4:]:
        store.put(chunk)
    for chunk in SHARED:
        assert store.locate(sha(chunk), BS) is not None


def _fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            target()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    return pid


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a process with threads
def test_threads_and_processes_publish_into_one_store(store: BlobStore) -> None:
    workers = [f"t{i}" for i in range(4)] + [f"p{i}" for i in range(4)]
    errors: list[BaseException] = []

    def thread_main(name: str) -> None:
        try:
            _pack_like(store.path, name)
        except BaseException as exc:
            errors.append(exc)

    pids = [_fork(lambda name=name: _pack_like(store.path, name)) for name in workers[4:]]  # type: ignore[misc]
    threads = [threading.Thread(target=thread_main, args=(name,)) for name in workers[:4]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert not errors and statuses == [0, 0, 0, 0]
    report = store.verify()
    assert report.findings == []
    assert report.blobs == len(store.blob_names()) == report.segments
    fresh = BlobStore.open(store.path)
    for chunk in [*SHARED, *(c for name in workers for c in _worker_chunks(name))]:
        location = fresh.locate(sha(chunk), BS)
        assert location is not None
        with open(store.blob_path(location.blob), "rb") as file:
            assert os.pread(file.fileno(), location.length, location.offset) == chunk


# Calls the child counts before killing itself: the publishing steps' system calls.
_STEPS = ("write", "pwrite", "fsync", "rename", "unlink", "open")


def _die_at(step: int) -> None:
    """In a forked child: SIGKILL this process at the step-th call of any of _STEPS."""
    calls = [0]
    for name in _STEPS:
        original = getattr(os, name)

        def wrapper(*args: object, _original: Callable[..., object] = original) -> object:
            calls[0] += 1
            if calls[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(*args)

        setattr(os, name, wrapper)


def _killed_pack(path: str, round_: int, step: int | None) -> None:
    store = BlobStore.open(path, writable=True)
    if step is not None:
        _die_at(step)
    with store.pack_lock():
        publish_blob(store, [chunk_data(f"crash{round_}-a"), SHARED[round_ % 4]])
    store.put(chunk_data(f"crash{round_}-b"))
    while True:  # until the parent's SIGKILL
        store.put(chunk_data(f"crash{round_}-{random.random()}", 100))


def _check_sound(store: BlobStore) -> None:
    """No problems; every chunk the index knows is there with its bytes."""
    report = store.verify()
    assert report.problems == [], [str(p) for p in report.problems]
    assert all(f.message.startswith(("temporary file", "orphan blob")) for f in report.warnings), (
        report.warnings
    )
    fresh = BlobStore.open(store.path)
    for name in fresh.segment_names():
        segment = decode_segment(Path(fresh.segment_path(name)).read_bytes(), fresh.segment_path(name))
        for chunk, _offset, length in segment.records:
            location = fresh.locate(chunk, BS)
            assert location is not None and location.length == length
            with open(fresh.blob_path(location.blob), "rb") as file:
                assert sha(os.pread(file.fileno(), location.length, location.offset)) == chunk


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sigkill_during_publishing_leaves_a_sound_store(store: BlobStore) -> None:
    rng = random.Random(1)
    rounds = 0
    for step in range(1, 15):  # deterministic: die at each system call of one publish
        pid = _fork(lambda step=step: _killed_pack(store.path, step, step))  # type: ignore[misc]
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        rounds += 1
    for round_ in range(100, 110):  # at random moments of a put() loop
        pid = _fork(lambda round_=round_: _killed_pack(store.path, round_, None))  # type: ignore[misc]
        time.sleep(rng.uniform(0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        rounds += 1
    assert rounds == 24
    _check_sound(store)
    warnings = store.verify().warnings
    assert any(f.name.startswith("tmp/") for f in warnings)  # some kills left a temp file
    # The store goes on working: a new pack reuses what was published and adds the rest.
    for chunk in SHARED:
        store.put(chunk)
    _check_sound(store)
    repaired = store.verify(repair=True)  # the dead writers' temps are stale
    assert repaired.problems == [] and all(f.removed for f in repaired.warnings if f.name.startswith("tmp/"))
    assert not store.temp_names()


def test_verify_while_packs_publish_finds_no_problems(store: BlobStore) -> None:
    stop = threading.Event()
    published: list[int] = []

    def pack() -> None:
        writer = BlobStore.open(store.path, writable=True)
        while not stop.is_set():
            writer.put(chunk_data(f"busy{len(published)}", 600))
            published.append(1)

    thread = threading.Thread(target=pack)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        rounds = 0
        while len(published) < 30 and time.monotonic() < deadline:
            report = store.verify()
            assert report.problems == [], [str(f) for f in report.problems]
            # A blob between its rename and its segment's is an orphan for a moment: a warning.
            assert all(f.message.startswith(("temporary file", "orphan blob")) for f in report.warnings)
            rounds += 1
    finally:
        stop.set()
        thread.join()
    assert len(published) >= 30 and rounds > 3
    assert store.verify().findings == []


# -- read-only second store --------------------------------------------------------------


def _as_nobody(work: Callable[[], object]) -> object:
    rfd, wfd = os.pipe()

    def child() -> None:
        os.close(rfd)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        os.write(wfd, json.dumps(work()).encode())

    pid = _fork(child)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    return json.loads(payload)


@needs_root
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_read_only_store_serves_an_unprivileged_user(shared_dir: Path) -> None:
    path = shared_dir / "store"
    store = BlobStore.open(path, writable=True, create=True)
    location = store.put(chunk_data("ro"))
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(path, 0o555)
    assert BlobStore.open(path, writable=True).writable  # root writes anyway: that is fine

    def work() -> object:
        reader = BlobStore.open(path)
        with reader.pack_lock():
            found = reader.locate(sha(chunk_data("ro")), BS)
        try:
            BlobStore.open(path, writable=True)
            refused = ""
        except StoreError as exc:
            refused = str(exc)
        cache = reader.file_cache(time.time_ns())
        cache.save()  # read-only: nothing written, no error
        return [
            found.blob if found else None,
            found.offset if found else None,
            refused,
            reader.verify().clean,
        ]

    result = _as_nobody(work)
    assert isinstance(result, list)
    blob, offset, refused, clean = result
    assert (blob, offset) == (location.blob, 0)
    assert "not writable" in refused and str(path) in refused
    assert clean


# -- stat cache --------------------------------------------------------------------------


def _stat(tmp_path: Path, name: str, data: bytes, age_s: float) -> tuple[bytes, os.stat_result]:
    path = tmp_path / name
    path.write_bytes(data)
    when = time.time_ns() - int(age_s * 1e9)
    os.utime(path, ns=(when, when))
    return os.fsencode(path), os.stat(path)


def test_file_cache_round_trip(store: BlobStore, tmp_path: Path) -> None:
    path, st_old = _stat(tmp_path, "old", b"x" * 10, 3600)
    cache = store.file_cache(st_old.st_ctime_ns + 2 * 10**9 + 1)  # the earliest start trusting it
    digests = [sha(b"a"), b"", sha(b"b")]
    assert cache.get(path, st_old, 8192) is None
    cache.put(path, st_old, 8192, digests)
    assert cache.get(path, st_old, 8192) == digests
    assert cache.get(path, st_old, 4096) is None  # another chunk size
    cache.save()
    reread = store.file_cache(time.time_ns() + 10**10)
    assert reread.get(path, st_old, 8192) == digests
    # ctime moves on chmod: the entry no longer matches, as with any change.
    os.chmod(path, 0o600)
    assert reread.get(path, os.stat(path), 8192) is None


def test_file_cache_skips_racy_files(store: BlobStore, tmp_path: Path) -> None:
    path, st_new = _stat(tmp_path, "new", b"y", 0)
    cache = store.file_cache(time.time_ns())
    cache.put(path, st_new, 4096, [sha(b"y")])  # ctime is now: too recent to trust
    assert cache.get(path, st_new, 4096) is None
    cache.save()
    assert store.file_cache(time.time_ns()).get(path, st_new, 4096) is None


def test_file_cache_keeps_other_entries_and_ignores_damage(store: BlobStore, tmp_path: Path) -> None:
    later = time.time_ns() + 10**10  # a pack "starting" later makes existing files non-racy
    first = store.file_cache(later)
    a, st_a = _stat(tmp_path, "a", b"a", 0)
    b, st_b = _stat(tmp_path, "b", b"b", 0)
    first.put(a, st_a, 4096, [sha(b"a")])
    first.save()
    second = store.file_cache(later)
    second.put(b, st_b, 4096, [sha(b"b")])
    second.save()
    third = store.file_cache(later)
    assert third.get(a, st_a, 4096) == [sha(b"a")] and third.get(b, st_b, 4096) == [sha(b"b")]
    cache_file = Path(store.path) / "cache" / "files"
    data = cache_file.read_bytes()
    parsed = CacheFile.parse(data)
    assert parsed.body.value.entry_count == 2 and parsed.body.value.entries[0].path == b
    for damaged in (data[:-1], data[:40] + bytes([data[40] ^ 1]) + data[41:], b"junk", b""):
        cache_file.write_bytes(damaged)
        assert store.file_cache(later).get(a, st_a, 4096) is None
    cache_file.write_bytes(data)
    os.chmod(cache_file, 0)
    fourth = store.file_cache(later)
    fourth.put(a, st_a, 4096, [])
    fourth.save()  # replaces the file it could or could not read
    assert decode_cache(cache_file.read_bytes()) is not None


def test_file_cache_save_failure_names_the_cache(store: BlobStore, tmp_path: Path) -> None:
    cache = store.file_cache(time.time_ns())
    shutil.rmtree(Path(store.path) / "cache")
    with pytest.raises(StoreError, match="cannot write the stat cache") as info:
        cache.save()
    assert os.path.join(store.path, "cache", "files") in str(info.value)
    assert not store.temp_names()  # the temp file went with the failure


def test_cache_codec_matches_the_schema() -> None:
    entries = [(b"/p/\xff", ((1, 2, 3, 4, -5, 4096), (sha(b"x"), b""))), (b"", ((0, 0, 0, 0, 0, 1), ()))]
    data = encode_cache(entries)
    body = CacheFile.parse(data).body.value
    assert [(e.path, list(e.digests)) for e in body.entries] == [
        (b"/p/\xff", [sha(b"x"), bytes(32)]),
        (b"", []),
    ]
    assert decode_cache(data) == dict(entries)


# -- maintenance -------------------------------------------------------------------------


def _corrupt(path: str, offset: int = 0) -> None:
    with open(path, "r+b") as file:
        byte = os.pread(file.fileno(), 1, offset)
        os.pwrite(file.fileno(), bytes([byte[0] ^ 0xFF]), offset)


def test_verify_reports_damage_by_name_and_repair_removes_it(store: BlobStore) -> None:
    good, _ = publish_blob(store, [b"good"])
    corrupt, _ = publish_blob(store, [b"corrupt"])
    truncated, _ = publish_blob(store, [b"truncated"])
    damaged, _ = publish_blob(store, [b"damaged segment"])
    missing, _ = publish_blob(store, [b"missing blob"])
    wrong_record = "ee" * 32  # a sound blob whose segment's digest does not match its bytes
    Path(store.blob_path(wrong_record)).write_bytes(bytes(BS))
    os.rename(store.blob_path(wrong_record), store.blob_path(hashlib.sha256(bytes(BS)).hexdigest()))
    zero = hashlib.sha256(bytes(BS)).hexdigest()
    Path(store.segment_path(zero)).write_bytes(encode_segment(zero, BS, BS, [(sha(b"lie"), 0, 10)]))
    orphan, _ = publish_blob(store, [b"orphan"])
    os.unlink(store.segment_path(orphan))
    _corrupt(store.blob_path(corrupt))
    os.truncate(store.blob_path(truncated), 100)
    _corrupt(store.segment_path(damaged), 70)
    os.unlink(store.blob_path(missing))
    Path(store.path, "tmp", "blob-1-x.tmp").write_bytes(b"partial")

    report = store.verify()
    lines = [str(f) for f in report.findings]
    assert f"blobs/sha256/{corrupt}: corrupt blob: content hashes to " in "\n".join(lines)
    assert any(line.startswith(f"blobs/sha256/{truncated}: corrupt blob") for line in lines)
    assert f"index/{damaged}: damaged index segment: checksum mismatch" in lines
    assert f"index/{missing}: index segment of a missing blob" in lines
    assert f"index/{zero}: record 0: 10 bytes at offset 0 do not match its digest" in lines
    assert f"warning: blobs/sha256/{orphan}: orphan blob: no index segment (gc removes it)" in lines
    assert any(line.startswith("warning: tmp/blob-1-x.tmp: temporary file") for line in lines)
    assert len(report.problems) == 5 and not report.clean
    assert good not in "\n".join(lines)

    repaired = store.verify(repair=True, stale_minutes=0)
    assert all(f.removed for f in repaired.problems)
    after = store.verify()
    assert after.clean
    assert [str(f) for f in after.findings] == [
        f"warning: blobs/sha256/{name}: orphan blob: no index segment (gc removes it)"
        for name in sorted([damaged, zero, orphan])
    ]
    assert store.contains(good) and not store.contains(corrupt) and not store.contains(truncated)
    assert not os.path.exists(store.segment_path(corrupt)) and not store.temp_names()
    assert BlobStore.open(store.path).locate(sha(b"good"), BS) is not None


def test_repair_keeps_temp_files_of_live_recent_writers(store: BlobStore) -> None:
    with store.new_blob() as pending:
        report = store.verify(repair=True)
        assert [f.removed for f in report.findings] == [False]
        assert "alive" in report.findings[0].message
        assert os.path.exists(pending.path)


def test_gc_removes_what_kept_images_do_not_reference(store: BlobStore) -> None:
    kept, _ = publish_blob(store, [b"kept"])
    dropped, _ = publish_blob(store, [b"dropped"])
    orphan, _ = publish_blob(store, [b"orphan"])
    os.unlink(store.segment_path(orphan))
    Path(store.segment_path("dd" * 32)).write_bytes(b"dangling")
    Path(store.path, "tmp", "blob-999999999-x.tmp").write_bytes(b"partial")
    images = {"one.img": {kept}, "two.img": {"ff" * 32}}

    def fake(image: str | os.PathLike[str]) -> set[str]:
        return images[os.fspath(image)]

    dry = collect_garbage(store, ["one.img", "two.img"], referenced=fake)
    names = [r.name for r in dry.removals]
    expected = [f"index/{dropped}", f"blobs/sha256/{dropped}", f"blobs/sha256/{orphan}", f"index/{'dd' * 32}"]
    assert sorted(names) == sorted([*expected, "tmp/blob-999999999-x.tmp"])
    assert names.index(f"index/{dropped}") < names.index(f"blobs/sha256/{dropped}")
    assert dry.bytes == 2 * BS + os.path.getsize(store.segment_path(dropped)) + 8 + 7
    assert dry.kept_blobs == 1 and dry.missing_blobs == ["ff" * 32]
    assert store.contains(dropped) and store.contains(orphan)  # a dry run removes nothing

    def broken(image: str | os.PathLike[str]) -> set[str]:
        if os.fspath(image) == "two.img":
            raise StoreError("cannot read", os.fspath(image))
        return images[os.fspath(image)]

    with pytest.raises(StoreError, match=r"two\.img"):
        collect_garbage(store, ["one.img", "two.img"], dry_run=False, referenced=broken)
    assert store.contains(dropped)  # one unreadable image: nothing removed

    done = collect_garbage(store, ["one.img", "two.img"], dry_run=False, referenced=fake)
    assert [r.name for r in done.removals] == names and not done.dry_run
    assert store.blob_names() == [kept] and store.segment_names() == [kept] and not store.temp_names()
    assert store.verify().findings == []


# -- real images (mkfs.erofs with the device tag patched in) ------------------------------


def tagged_image(
    utils: ErofsUtils, work: Path, store: BlobStore, files: dict[str, bytes]
) -> tuple[Path, str]:
    """An image whose chunks live in one store blob: mkfs.erofs writes the blob device, which
    is published (with a segment built from the image's chunk map), and the device slot's tag
    and size are patched to the blob's digest (erofs-utils 1.5 leaves them empty)."""
    src = work / "src"
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    image, blob = work / "image.erofs", work / "blob.img"
    utils.mkfs(image, src, "--quiet", f"--chunksize={BS}", f"--blobdev={blob}")
    content = blob.read_bytes()
    content += bytes(-len(content) % BS)
    records = set()
    with open_image(image, [blob]) as img:
        for entry in img.scandir_nid(img.root_nid):
            inode = img.inode(entry.nid)
            if entry.file_type != FileType.REG_FILE or inode.layout != DataLayout.CHUNK_BASED:
                continue
            for index, _off, device, blkaddr in iter_chunk_entries(img.storage, inode):
                assert device == 1
                length = min(BS, inode.size - index * BS)
                offset = blkaddr * BS
                records.add((sha(content[offset : offset + length]), offset, length))
    digest = hashlib.sha256(content).hexdigest()
    with store.new_blob() as pending:
        os.write(pending.fd, content)
        pending.publish(digest, BS, sorted(records, key=lambda r: r[1]))
    raw = bytearray(image.read_bytes())
    rec = SUPERBLOCK.unpack(raw, 1024)
    slot = rec.devt_slotoff * 128
    raw[slot : slot + 64] = digest.encode()
    struct.pack_into("<I", raw, slot + 64, len(content) // BS)
    if rec.feature_compat & FeatureCompat.SB_CHKSUM:
        struct.pack_into("<I", raw, 1028, sb_checksum(raw, BS))
    image.write_bytes(raw)
    return image, digest


@pytest.fixture
def two_images(erofs_utils: ErofsUtils, tmp_path: Path, store: BlobStore) -> tuple[Path, str, Path, str]:
    shared = chunk_data("shared file", 3 * BS)
    one, blob_one = tagged_image(
        erofs_utils, tmp_path / "one", store, {"a": shared, "b": shared, "c": chunk_data("c", 5000)}
    )
    two, blob_two = tagged_image(erofs_utils, tmp_path / "two", store, {"d": chunk_data("d", 2 * BS + 1)})
    return one, blob_one, two, blob_two


def test_gc_and_du_read_real_device_tables(store: BlobStore, two_images: tuple[Path, str, Path, str]) -> None:
    one, blob_one, two, blob_two = two_images
    assert referenced_blobs(one) == {blob_one} and referenced_blobs(two) == {blob_two}
    with open_image(one, [store.blob_path(blob_one)]) as img:
        assert img.read_bytes("/c") == chunk_data("c", 5000)  # the patched image reads from the store

    usage = store.du([one, two])
    assert usage.blobs == 2 and usage.stored_bytes == (5 + 3) * BS
    assert [(u.logical_bytes, u.blobs) for u in usage.images] == [(6 * BS + 5000, 1), (2 * BS + 1, 1)]
    assert usage.referenced_stored_bytes == usage.stored_bytes

    assert verify_store(store).findings == []
    dry = store.gc([one])
    assert {r.name for r in dry.removals} == {f"blobs/sha256/{blob_two}", f"index/{blob_two}"}
    assert store.contains(blob_two)
    store.gc([one], dry_run=False)
    assert store.blob_names() == [blob_one]
    assert store.du([one, two]).images[1].logical_bytes == 0  # its blob is gone


# -- images packed into the store (needs the writer's --blob-store) -------------------------


def test_packed_images_verify_du_and_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("erofsgen.writer.chunks", reason="pack --blob-store is not in this tree")
    from erofsgen.cli import main as cli_main

    src, other, store_dir = tmp_path / "src", tmp_path / "other", tmp_path / "store"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(chunk_data("a", 300_000))
    (src / "sub" / "a2").write_bytes(chunk_data("a", 300_000))  # the same chunks again
    (src / "b").write_bytes(chunk_data("b", 10_000))
    (src / "small").write_bytes(b"inline\n")  # stays in the image
    one, two, three = tmp_path / "one.img", tmp_path / "two.img", tmp_path / "three.img"
    pack = ["pack", "--chunksize", "65536", "--blob-store", str(store_dir)]
    assert cli_main([*pack, str(src), str(one)]) == 0
    (src / "c").write_bytes(chunk_data("c", 50_000))
    assert cli_main([*pack, str(src), str(two)]) == 0
    other.mkdir()
    (other / "d").write_bytes(chunk_data("d", 20_000))
    assert cli_main([*pack, str(other), str(three)]) == 0
    capsys.readouterr()

    store = BlobStore.open(store_dir)
    assert store.verify().findings == []
    blobs = {name: referenced_blobs(image) for name, image in [("one", one), ("two", two), ("three", three)]}
    assert len(blobs["one"]) == 1 and blobs["one"] < blobs["two"] and len(blobs["two"]) == 2
    assert store.blob_names() == sorted(blobs["two"] | blobs["three"])
    usage = store.du([one, two, three])
    assert [u.logical_bytes for u in usage.images] == [610_000, 660_000, 20_000]
    # Each distinct chunk once, padded to its block end (a 65536-byte chunk size).
    assert usage.indexed_bytes == 300_000 + 10_000 + 50_000 + 20_000
    # The files were written just now (ctime): too recent to record, but the cache is written.
    assert decode_cache((store_dir / "cache" / "files").read_bytes()) == {}

    dry = store.gc([two])
    (dropped,) = blobs["three"]
    assert {r.name for r in dry.removals} == {f"blobs/sha256/{dropped}", f"index/{dropped}"}
    writable = BlobStore.open(store_dir, writable=True)
    writable.gc([one, two], dry_run=False)
    assert writable.blob_names() == sorted(blobs["two"]) and writable.verify().findings == []
    with open_image(two) as img:
        tags = [slot.tag.decode() for slot in img.superblock.devices]
    with open_image(two, [writable.blob_path(tag) for tag in tags]) as img:
        assert img.read_bytes("/c") == chunk_data("c", 50_000)
        assert img.read_bytes("/sub/a2") == chunk_data("a", 300_000)
    assert cli_main(["check", str(two), "--blob-store", str(store_dir), "--data", "--quiet"]) == 0
    assert cli_main(["check", str(three), "--blob-store", str(store_dir), "--quiet"]) == 2  # its blob is gone
