"""Dump files whose mkcomposefs 1.0.8 images are pinned by fs-verity digest in the tests.

Each case: (dump text, min version, max version). The digests in test_composefs_image.py were
produced by composefs's own mkcomposefs 1.0.8 (`mkcomposefs --print-digest-only
--min-version=A --max-version=B --from-file CASE.dump -`).
"""

from __future__ import annotations

H = "5a" * 32
ROOT = "/ 0 40755 2 0 0 0 0.0 - - -\n"

SIMPLE = (
    ROOT
    + "/blkdev 0 60000 1 0 0 123 0.0 - - -\n"
    + "/chrdev 0 20000 1 0 0 123 0.0 - - -\n"
    + "/fifo 0 10000 1 0 0 0 0.0 - - -\n"
    + f"/regular-external 1234 100000 1 0 0 0 0.0 5a/{H[2:]} - {H}\n"
    + "/regular-inline 4 100000 1 0 0 0 0.0 - hihi -\n"
    + "/socket 0 140000 1 0 0 0 0.0 - - -\n"
    + "/symlink 7 120000 1 0 0 0 0.0 /target - -\n"
)

# composefs-rs crates/composefs/tests/special_v1.dump (its digest is pinned there too).
SPECIAL_V1 = (
    "/ 4096 40555 2 0 0 0 1633950376.0 - - - trusted.foo1=bar-1 user.foo2=bar-2\n"
    "/blockdev 0 60777 1 0 0 107690 1633950376.0 - - - trusted.bar=bar-2\n"
    "/chardev 0 20777 1 0 0 10769 1633950376.0 - - - trusted.foo=bar-2\n"
    "/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - trusted.overlay.redirect=/foo\\n "
    "user.overlay.redirect=/foo\\n user.foo=bar-2\n"
    "/fifo 0 10777 1 0 0 0 1633950376.0 - - - trusted.bar=bar-2\n"
    "/inline 15 100777 1 0 0 0 1633950376.0 - FOOBAR\\nINAFILE\\n - user.foo=bar-2\n"
    "/whiteout 0 20777 1 0 0 0 1633950376.0 - - - trusted.foo=bar-2\n"
)


def _digest(i: int) -> str:
    return bytes((i * 7 + k) & 0xFF for k in range(32)).hex()


def _external(path: str, size: int, i: int, extra: str = "") -> str:
    d = _digest(i)
    return f"{path} {size} 100644 1 0 0 0 0.0 {d[:2]}/{d[2:]} - {d}{extra}\n"


HARDLINKS = (
    ROOT
    + "/a 0 40755 2 0 0 0 0.0 - - -\n"
    + _external("/a/file", 100000, 1)
    + "/a/link 0 @100644 0 0 0 0 0.0 /a/file - -\n"
    + "/b 5 100600 3 1 2 0 7.5 - hello - user.x=1\n"
    + "/c 0 @100644 0 0 0 0 0.0 /b - -\n"
    + "/d 0 @100644 0 0 0 0 0.0 /a/link - -\n"
)

WHITEOUTS = (
    "/ 0 40755 2 0 0 0 10.0 - - - security.selinux=system_u:object_r:root_t:s0\n"
    + "/00 0 100644 1 0 0 0 10.0 - - -\n"
    + "/ff 0 40755 2 0 0 0 10.0 - - -\n"
    + "/dir 0 40755 2 0 0 0 10.0 - - - trusted.overlay.opaque=y\n"
    + "/dir/gone 0 20644 1 0 0 0 10.0 - - -\n"
    + "/dir/other 0 20644 1 5 5 0 11.0 - - - trusted.overlay.whiteout=z\n"
    + "/top-gone 0 20000 1 0 0 0 10.0 - - -\n"
)

XATTRS = (
    "/ 0 40755 2 0 0 0 0.0 - - - system.posix_acl_default=\\x02\\x00 trusted.overlay.metacopy=x\n"
    + "".join(
        f"/f{i:03d} 0 100644 1 0 0 0 0.0 - - - user.common=shared user.n{i % 3}=v"
        + "".join(f" user.s{k:03d}={k}" for k in range(130 if i < 2 else 0))
        + f" security.capability=\\x01\\x02 lustre.odd={i % 2} trusted.overlay.x=\\x3d\n"
        for i in range(6)
    )
    + "/acl 0 100644 1 0 0 0 0.0 - - - system.posix_acl_access=\\x02\\x00\\x00\\x00\n"
)

SHAPES = (
    ROOT
    + "/big 0 40755 2 0 0 0 0.0 - - -\n"
    + "".join(f"/big/entry-with-a-longish-name-{i:04d} 0 100644 1 0 0 0 0.0 - - -\n" for i in range(190))
    + "/half 0 40755 2 0 0 0 0.0 - - -\n"
    + "".join(f"/half/{'n' * 60}{i:03d} 0 100644 1 0 0 0 0.0 - - -\n" for i in range(27))
    + "/-sorts-before-dot 0 100644 1 0 0 0 0.0 - - -\n"
    + "/+plus 0 100644 1 0 0 0 0.0 - - -\n"
    + "".join(
        f"/inline{n} {n} 100644 1 0 0 0 0.0 - {'c' * n} -\n"
        for n in (1, 64, 2048, 2049, 4095, 4096, 4097, 5000)
    )
    + f"/long-link 3000 120777 1 0 0 0 0.0 {'t' * 3000} - -\n"
    + f"/longer-link 4090 120777 1 0 0 0 0.0 {'u' * 4090} - -\n"
    + f"/longest-link 4095 120777 1 0 0 0 0.0 {'v' * 4095} - -\n"
    + "/no-digest 70000 100644 1 0 0 0 0.0 - - -\n"
    + "/no-payload 70000 100644 1 0 0 0 0.0 - - "
    + _digest(9)
    + "\n"
    + _external("/huge", 2**44 + 1, 3)
    + _external("/exact-4096", 4096, 4)
    + "/empty 0 100644 1 0 0 0 0.0 - - -\n"
    + "/chardev-sized 99999999999 20644 1 0 0 5 0.0 - - -\n"
)

EXTENDED = (
    "/ 0 40755 2 0 0 0 100.5 - - -\n"
    + "/old 0 100644 1 0 0 0 50.999999999 - - -\n"
    + "/new 0 100644 1 0 0 0 1700000000.0 - - -\n"
    + "/big-ids 0 100644 70000 70000 80000 0 50.999999999 - - -\n"
    + "/same 0 100644 1 65535 65535 0 50.999999999 - - -\n"
    + "/far-future 0 100644 1 0 0 0 9999999999.123 - - -\n"
    + _external("/over-4g", 2**32, 5)
)

CASES: dict[str, tuple[str, int, int]] = {
    "empty-v0": (ROOT, 0, 0),
    "empty-v1": (ROOT, 1, 1),
    "simple-v0": (SIMPLE, 0, 0),
    "simple-v1": (SIMPLE, 1, 1),
    "special_v1": (SPECIAL_V1, 1, 1),
    "special_v1-auto": (SPECIAL_V1, 0, 1),
    "special_v1-v0": (SPECIAL_V1, 0, 0),
    "hardlinks": (HARDLINKS, 0, 1),
    "whiteouts-v0": (WHITEOUTS, 0, 0),
    "whiteouts-auto": (WHITEOUTS, 0, 1),
    "xattrs": (XATTRS, 0, 1),
    "shapes": (SHAPES, 0, 1),
    "extended": (EXTENDED, 0, 1),
}
