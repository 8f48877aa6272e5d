"""An OCI image layout directory (`oci:DIR[:TAG]`) as a stack of tar layers.

DIR holds `oci-layout`, `index.json` and `blobs/ALG/HEX` (image-spec, "image layout"). The
image is the manifest of `index.json` whose `org.opencontainers.image.ref.name` annotation is
TAG, or its only manifest when no TAG is given; an image index met on the way is resolved to
the manifest for this machine's platform (or its only one). Its layers, lowest first, are the
archives `tree_from_layers` merges. Each layer blob is checked against its descriptor's
digest and size as it is read, so a damaged blob is an error, never a different tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from .archive_stream import ArchiveError

PREFIX = "oci:"
REF_NAME = "org.opencontainers.image.ref.name"
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le"}
_ARCHES |= {"s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A blob as a descriptor names it."""

    media_type: str
    digest: str
    size: int


def is_oci_source(source: str) -> bool:
    return source.startswith(PREFIX)


def oci_layers(source: str) -> list[VerifiedBlob]:
    """The layer blobs of `oci:DIR[:TAG]`, lowest first, each a file object read once."""
    directory, tag = _split(source[len(PREFIX) :])
    layout = _OciLayout(directory)
    manifest = layout.manifest(tag)
    return [layout.open_blob(layer) for layer in manifest]


def _split(spec: str) -> tuple[str, str | None]:
    """DIR and TAG: the tag follows the last ':' unless that ':' is part of a path to a directory."""
    if os.path.isdir(spec) or ":" not in spec:
        return spec, None
    directory, _, tag = spec.rpartition(":")
    return directory, tag or None


class _OciLayout:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        marker = self._json(os.path.join(directory, "oci-layout"), "oci-layout")
        if not isinstance(marker, dict) or "imageLayoutVersion" not in marker:
            raise self.error("oci-layout has no imageLayoutVersion: not an OCI image layout")

    def error(self, message: str) -> InvalidInputError:
        return InvalidInputError(message, path=self.directory)

    def _json(self, path: str, what: str) -> Any:
        try:
            with open(path, "rb") as f:
                return json.load(f)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read {what}: {exc.strerror or exc}", path=self.directory
            ) from None
        except ValueError as exc:
            raise InvalidInputError(f"{what} is not valid JSON: {exc}", path=self.directory) from None

    def blob_path(self, desc: Descriptor) -> str:
        algorithm, _, hexdigest = desc.digest.partition(":")
        if (
            algorithm != "sha256"
            or len(hexdigest) != 64
            or not all(c in "0123456789abcdef" for c in hexdigest)
        ):
            raise self.error(f"unsupported or malformed digest {desc.digest!r}")
        return os.path.join(self.directory, "blobs", algorithm, hexdigest)

    def _blob_json(self, desc: Descriptor, what: str) -> Any:
        with self.open_blob(desc) as blob:
            data = blob.read()
            if blob.read(1):
                raise self.error(f"{what} {desc.digest} is larger than its descriptor says")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise self.error(f"{what} {desc.digest} is not valid JSON: {exc}") from None

    def manifest(self, tag: str | None) -> list[Descriptor]:
        """The layer descriptors of the image `tag` names (or the only image)."""
        index = self._json(os.path.join(self.directory, "index.json"), "index.json")
        candidates = self._descriptors(index, "index.json")
        if tag is not None:
            chosen = [d for d, annotations in candidates if annotations.get(REF_NAME) == tag]
            if not chosen:
                tags = sorted(str(a[REF_NAME]) for _d, a in candidates if REF_NAME in a)
                raise self.error(f"no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})")
        else:
            chosen = [d for d, _annotations in candidates]
            if len(chosen) != 1:
                raise self.error(f"index.json lists {len(chosen)} images: name one as oci:DIR:TAG")
        desc = chosen[0]
        for _depth in range(8):  # indexes of indexes, as far as anyone nests them
            if desc.media_type not in _INDEX_TYPES:
                break
            desc = self._platform_manifest(self._blob_json(desc, "image index"), desc)
        manifest = self._blob_json(desc, "manifest")
        layers = manifest.get("layers") if isinstance(manifest, dict) else None
        if not isinstance(layers, list):
            raise self.error(f"manifest {desc.digest} has no layers list")
        return [self._descriptor(layer, f"manifest {desc.digest}") for layer in layers]

    def _platform_manifest(self, index: Any, desc: Descriptor) -> Descriptor:
        entries = self._descriptors(index, f"image index {desc.digest}")
        if len(entries) == 1:
            return entries[0][0]
        arch = _ARCHES.get(platform.machine(), platform.machine())
        for entry, _annotations in entries:
            wanted = self._raw_platform(index, entry)
            if wanted == ("linux", arch):
                return entry
        raise self.error(f"image index {desc.digest} has no manifest for linux/{arch}")

    @staticmethod
    def _raw_platform(index: dict[str, Any], entry: Descriptor) -> tuple[str, str] | None:
        for raw in index.get("manifests", []):
            if isinstance(raw, dict) and raw.get("digest") == entry.digest:
                plat = raw.get("platform") or {}
                return str(plat.get("os")), str(plat.get("architecture"))
        return None

    def _descriptors(self, index: Any, what: str) -> list[tuple[Descriptor, dict[str, Any]]]:
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list):
            raise self.error(f"{what} has no manifests list")
        return [(self._descriptor(raw, what), dict(raw.get("annotations") or {})) for raw in manifests]

    def _descriptor(self, raw: Any, what: str) -> Descriptor:
        try:
            desc = Descriptor(str(raw["mediaType"]), str(raw["digest"]), int(raw["size"]))
        except (TypeError, KeyError, ValueError):
            raise self.error(f"{what}: a descriptor lacks mediaType, digest or size") from None
        if desc.size < 0:
            raise self.error(f"{what}: descriptor {desc.digest} has a negative size")
        return desc

    def open_blob(self, desc: Descriptor) -> VerifiedBlob:
        path = self.blob_path(desc)
        try:
            raw = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by VerifiedBlob)
        except OSError as exc:
            raise self.error(f"cannot open blob {desc.digest}: {exc.strerror or exc}") from None
        return VerifiedBlob(raw, desc, path)


class VerifiedBlob(io.RawIOBase):
    """A blob file read once; at its end, its size and SHA-256 must be the descriptor's."""

    def __init__(self, raw: io.RawIOBase | Any, desc: Descriptor, path: str) -> None:
        super().__init__()
        self._raw = raw
        self.desc = desc
        self.name = path
        self._hash = hashlib.sha256()
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = int(self._raw.readinto(buffer) or 0)
        if n:
            self._hash.update(memoryview(buffer)[:n])
            self._size += n
            if self._size > self.desc.size:
                raise ArchiveError(f"blob is larger than its descriptor's {self.desc.size} bytes", self.name)
        elif self._size != self.desc.size or "sha256:" + self._hash.hexdigest() != self.desc.digest:
            raise ArchiveError(f"blob does not match its digest {self.desc.digest} (damaged)", self.name)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()
