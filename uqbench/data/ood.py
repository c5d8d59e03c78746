"""A user's own out-of-distribution set: ``--ood NAME=PATH``.

``PATH`` is an IDX image file (gzipped or not) or a folder of images (searched
recursively; labels, if any, are ignored). The images are converted to the benchmark's
channels and size, exactly like the built-in OOD sets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import Tensor

from uqbench.data.idx import read_idx_images
from uqbench.data.images import IMAGE_SUFFIXES, conform, read_image_files, to_float
from uqbench.errors import UserError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_USAGE = "--ood expects NAME=PATH, e.g. --ood kmnist=/data/kmnist-images-idx3-ubyte.gz"


def parse_ood_option(text: str) -> tuple[str, str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; NAME is letters, digits, ``_ . -``."""
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not path or not _NAME.fullmatch(name):
        raise UserError(f"{_USAGE} (got {text!r})")
    return name, path


def load_ood_images(
    path: str | os.PathLike[str], *, channels: int, size: tuple[int, int]
) -> Tensor:
    """float32 ``[N, channels, H, W]`` in [0, 1] from an IDX image file or an image folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        images = to_float(read_image_files(path, channels=channels, size=size))
        if len(images) == 0:
            raise UserError(
                f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}; "
                "point --ood at an image folder or an IDX image file"
            )
        return images
    if path.is_file():
        images = to_float(read_idx_images(path))
        if len(images) == 0:
            raise UserError(f"{path} holds no images; point --ood at a non-empty set")
        return conform(images, channels=channels, size=size)
    raise UserError(f"OOD set {path} does not exist; {_USAGE}")
