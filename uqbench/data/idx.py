"""IDX files (MNIST's format), plain or gzipped, read with numpy and validated.

Layout (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions ``d``, ``d`` uint32
sizes, then the data in C order. Gzip is recognised by its magic bytes, not the file
name. torchvision's ``read_image_file`` cannot read ``.gz``; this reader can, and turns a
truncated or corrupt file into a :class:`~uqbench.errors.UserError` naming it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from uqbench.errors import UserError

_GZIP_MAGIC = b"\x1f\x8b"
_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, gunzipped if it starts with gzip's magic number."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}; check the path") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(
            f"{path} is a truncated or corrupt gzip file ({exc}); download it again"
        ) from None


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """The array stored in an IDX file (read-only, native byte order).

    Checks the magic number, the dimension count (``ndim`` if given) and that the data
    length equals the product of the sizes times the item size.
    """
    path = Path(path)
    raw = read_file_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise UserError(
            f"{path} is not an IDX file (magic number {raw[:4].hex() or 'missing'}, expected "
            "0000 + type code + dimension count); pass an MNIST-style idx file"
        )
    dims_count = raw[3]
    if ndim is not None and dims_count != ndim:
        raise UserError(
            f"{path}: IDX file has {dims_count} dimension(s), expected {ndim}"
            f" ({'images [N, H, W]' if ndim == 3 else 'labels [N]'})"
        )
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise UserError(f"{path}: IDX header is truncated; download the file again")
    dims = struct.unpack(f">{dims_count}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(
            f"{path}: truncated or corrupt IDX file: its header promises shape {tuple(dims)} "
            f"({expected} data bytes) but it holds {len(raw) - header}; download it again"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """uint8 images ``[N, H, W]`` from an IDX3 file."""
    images = read_idx(path, ndim=3)
    if images.dtype != np.uint8:
        raise UserError(f"{path}: IDX images must be uint8 (0..255), found {images.dtype}")
    if 0 in images.shape:
        raise UserError(
            f"{path}: IDX file holds no images (shape {images.shape}: N x height x width); "
            "pass a non-empty set of images"
        )
    return images


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """int64 labels ``[N]`` from an IDX1 file."""
    labels = read_idx(path, ndim=1)
    if labels.dtype.kind not in "iu":
        raise UserError(f"{path}: IDX labels must be integers, found {labels.dtype}")
    if len(labels) == 0:
        raise UserError(f"{path}: IDX file holds no labels; pass a non-empty label file")
    return labels.astype(np.int64)


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, H, W], labels int64 [N])``; the two counts must agree."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; they must come from the same set"
        )
    return images, labels
