"""Write the deterministic source tree the mkfs-1.9 vectors are built from (see README.md).

Usage: python3 make_tree.py DIR  (DIR must not exist). Same bytes on every run and machine.
       python3 make_tree.py --manifest DIR  prints MANIFEST (path, mode, size, sha256) of DIR.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path

WORDS = ["erofs", "fragment", "packed", "inode", "dedupe", "pcluster", "lcluster", "extent", "block"]
WORDS += ["tail", "head", "zstd", "lz4", "index"]


def text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(WORDS) for _ in range(12)) + "\n").encode()
    return bytes(out[:size])


def main(root: Path) -> None:
    rng = random.Random(20261201)
    root.mkdir()
    for sub in ("text", "small", "bin"):
        (root / sub).mkdir()
    a = text(rng, 20000)
    files = {
        "text/a.txt": a,
        "text/copy.txt": a,  # whole-file duplicate
        "text/b.txt": a[:12288] + text(rng, 5000),  # shares its first pclusters with a.txt
        "repeat.txt": text(rng, 4096) * 16,  # the same block again and again
        "bin/random.bin": rng.randbytes(9000),  # incompressible: raw (PLAIN) pclusters
        "bin/mixed.bin": b"".join(rng.randbytes(4096) + text(rng, 4096) for _ in range(5)),
        "bin/zeros.bin": bytes(65536) + b"end",
        "empty": b"",
    }
    for i in range(10):
        files[f"small/s{i}.txt"] = text(rng, 100 + 311 * i)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
        os.chmod(root / rel, 0o644)
    os.chmod(root / "bin/random.bin", 0o755)
    os.symlink("text/a.txt", root / "link")
    for path in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.chmod(path, 0o755)


def manifest(root: Path) -> str:
    """One line per entry, sorted by path: PATH MODE(octal) SIZE SHA256 ('-' for directories).

    A symlink's size and digest are those of its target string, as readlink returns it.
    """
    lines = []
    for path in sorted([root, *root.rglob("*")]):
        rel = "/" + path.relative_to(root).as_posix() if path != root else "/"
        st = path.lstat()
        if path.is_symlink():
            data: bytes | None = os.readlink(path).encode()
        elif path.is_dir():
            data = None
        else:
            data = path.read_bytes()
        size, digest = ("-", "-") if data is None else (str(len(data)), hashlib.sha256(data).hexdigest())
        lines.append(f"{rel} {st.st_mode:o} {size} {digest}\n")
    return "".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--manifest":
        sys.stdout.write(manifest(Path(sys.argv[2])))
    else:
        main(Path(sys.argv[1]))
