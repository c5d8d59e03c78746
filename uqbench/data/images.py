"""Image files (PNG, JPEG, ...) and conversion to a benchmark's pixel format.

Every image is decoded with Pillow, converted to the benchmark's channels (``L`` for 1,
``RGB`` for 3) and, when its size differs, resized (bilinear, antialiased) to the
benchmark's ``(height, width)``, so an OOD set is preprocessed exactly like the
in-distribution images. Arrays are uint8 ``[N, C, H, W]`` until :func:`to_float` scales
them to float32 in [0, 1].

Layouts: a labelled folder ``<dir>/<class>/<image>`` (classes in sorted order, like
torchvision's ``ImageFolder``), an unlabelled folder searched recursively, and the same
labelled tree inside a ``.tar.gz`` (read in one streaming pass, never unpacked).
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from uqbench.errors import UserError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_MODES = {1: "L", 3: "RGB"}
#: ITU-R 601-2 luma, the weights Pillow's ``convert("L")`` uses.
_LUMA = (0.299, 0.587, 0.114)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether the name has an image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def decode_image(
    source: str | os.PathLike[str] | bytes,
    *,
    channels: int,
    size: tuple[int, int],
    name: str | None = None,
) -> np.ndarray:
    """One image as uint8 ``[channels, H, W]`` at ``size = (H, W)``."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    label = name or str(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: an image
            # that large is a decompression bomb, never a benchmark image, so both stop.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                img = img.convert(_MODES[channels])
                height, width = size
                if img.size != (width, height):
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"refusing image {label}: {exc}; remove it from the image folder") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {label} ({exc}); remove or replace it") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _stack(arrays: list[np.ndarray], channels: int, size: tuple[int, int]) -> np.ndarray:
    if not arrays:
        return np.zeros((0, channels, *size), dtype=np.uint8)
    return np.stack(arrays)


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``folder`` (recursively), sorted by path: what the readers read."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))


def read_image_files(
    folder: str | os.PathLike[str], *, channels: int, size: tuple[int, int]
) -> np.ndarray:
    """Every image under ``folder`` (recursively, sorted by path) as uint8 ``[N, C, H, W]``."""
    files = image_files(folder)
    return _stack([decode_image(p, channels=channels, size=size) for p in files], channels, size)


def read_image_folder(
    folder: str | os.PathLike[str], *, channels: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A labelled folder ``<folder>/<class>/<image>``: ``(images, labels, class names)``.

    Class ``k`` is the k-th subfolder name in sorted order; images inside a class are
    taken in sorted order of their names (recursively).
    """
    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise UserError(f"{folder} holds no class subfolders; expected <dir>/<class>/<image>")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        files = image_files(folder / cls)
        images.extend(decode_image(p, channels=channels, size=size) for p in files)
        labels.extend([index] * len(files))
    return _stack(images, channels, size), np.asarray(labels, dtype=np.int64), classes


def read_image_tarball(
    path: str | os.PathLike[str], *, channels: int, size: tuple[int, int]
) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Labelled trees ``[prefix/]<split>/<class>/<image>`` inside a tar archive.

    Returns ``split -> (images, labels, class names)``, each ordered like
    :func:`read_image_folder` would order the unpacked tree.
    """
    path = Path(path)
    found: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) < 3 or not is_image_file(member.name):
                    continue
                split, cls, name = parts[-3], parts[-2], parts[-1]
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                pixels = decode_image(
                    handle.read(), channels=channels, size=size, name=f"{path}:{member.name}"
                )
                found.setdefault(split, {}).setdefault(cls, []).append((name, pixels))
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise UserError(
            f"{path} is not a readable tar archive ({exc}); download it again"
        ) from None
    out: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    for split, by_class in found.items():
        classes = sorted(by_class)
        images: list[np.ndarray] = []
        labels: list[int] = []
        for index, cls in enumerate(classes):
            items = sorted(by_class[cls], key=lambda item: item[0])
            images.extend(pixels for _, pixels in items)
            labels.extend([index] * len(items))
        out[split] = (_stack(images, channels, size), np.asarray(labels, dtype=np.int64), classes)
    return out


def to_float(images: np.ndarray) -> Tensor:
    """uint8 ``[N, H, W]`` or ``[N, C, H, W]`` -> float32 ``[N, C, H, W]`` in [0, 1] (x / 255)."""
    array = images[:, None] if images.ndim == 3 else images
    return torch.from_numpy(np.divide(array, 255, dtype=np.float32))


def conform(images: Tensor, *, channels: int, size: tuple[int, int]) -> Tensor:
    """Float images ``[N, C, H, W]`` converted to ``channels`` and resized to ``size``.

    1 -> 3 channels repeats the grey plane; 3 -> 1 takes ITU-R 601-2 luma (as Pillow's
    ``convert("L")``). Resizing is bilinear with antialiasing (as Pillow's).
    """
    have = images.shape[1]
    if have != channels:
        if have == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif have == 3 and channels == 1:
            weights = torch.tensor(_LUMA, dtype=images.dtype).view(1, 3, 1, 1)
            images = (images * weights).sum(1, keepdim=True)
        else:
            raise UserError(f"cannot convert {have}-channel images to {channels} channels")
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(
            images, size=size, mode="bilinear", antialias=True, align_corners=False
        )
        images = images.clamp(0.0, 1.0)
    return images.contiguous()
