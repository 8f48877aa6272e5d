#!/bin/sh
# Rebuild the mkfs-1.9 vectors: sh make-images.sh /path/to/mkfs.erofs (erofs-utils 1.9.3).
set -eu
MKFS=${1:?path to mkfs.erofs 1.9.3}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(mktemp -d)/tree
python3 "$HERE/make_tree.py" "$SRC"
COMMON="-b4096 -T0 --all-root -U 6f9a1c52-1d2e-4b7a-9a51-0c3e8d7f2b10"
mk() { name=$1; shift; "$MKFS" $COMMON "$@" "$HERE/$name.erofs" "$SRC" >/dev/null; }
mk frag-lz4hc -zlz4hc -Efragments
mk allfrag-lz4hc -zlz4hc -Eall-fragments
mk dedupe-lz4hc -zlz4hc -Ededupe
mk ztail-frag-zstd -zzstd -Eztailpacking,fragments
mk frag-dedupe-zstd -zzstd -C16384 -Efragments,dedupe
mk allfrag-dedupe-zstd -zzstd -Eall-fragments,dedupe
python3 "$HERE/make_tree.py" --manifest "$SRC" >"$HERE/MANIFEST"
rm -r "$(dirname "$SRC")"
