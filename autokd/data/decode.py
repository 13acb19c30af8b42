"""Image files to uint8 arrays: PIL, converted to RGB (or kept grey), bilinear resize to a square.

Image folders, tables of image paths and ``autokd predict`` all decode here, so an image gives
the same pixels whichever way it reached autokd.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from autokd.data.images import _check_image_size
from autokd.errors import AutokdError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _target_size(first: Path, image_size: int | None) -> int:
    if image_size is not None:
        return image_size
    from PIL import Image

    try:
        with Image.open(first) as im:
            width, height = im.size
    except Exception as exc:
        raise _unreadable(first, exc) from exc
    size = min(width, height)  # a non-square first image: every image is squashed to its short side
    _check_image_size(size, f"the first image {first}")
    return size


class UnreadableImage(AutokdError):
    """An image file PIL cannot read; ``path`` says which, so a source can name where it listed it."""

    def __init__(self, problem: str, fix: str, path: Path | None = None):
        super().__init__(problem, fix)
        self.path = path

    def __reduce__(self):  # pickled whole (a Ray worker's error reaches the driver)
        return type(self), (self.problem, self.fix, self.path)


def _unreadable(path: Path, exc: Exception) -> UnreadableImage:
    return UnreadableImage(f"cannot read image {path} ({type(exc).__name__}: {exc})", f"remove or replace {path}", path)


def _decode_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """One image as uint8 (size, size, 3) and whether it was grayscale ("L")."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            gray = im.mode == "L"
            im = im.convert("L" if gray else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(im)
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... for bad files
        raise _unreadable(path, exc) from exc
    if gray:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels, gray


def _decode_all(files: list[Path], image_size: int | None, show_progress: bool, description: str) -> torch.Tensor:
    """Decode ``files`` in a thread pool (PIL releases the GIL) into uint8 (N, C, S, S)."""
    size = _target_size(files[0], image_size)
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)  # (N, H, W, 3)
    all_gray = True
    progress = None
    if show_progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(description, total=len(files))
    pool = ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4))
    try:
        for i, (pixels, gray) in enumerate(pool.map(lambda f: _decode_image(f, size), files)):
            out[i] = pixels
            all_gray &= gray
            if progress is not None:
                progress.advance(task)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, drop the queued work
        if progress is not None:
            progress.stop()
    images = torch.from_numpy(out).permute(0, 3, 1, 2)  # (N, 3, S, S)
    return (images[:, :1] if all_gray else images).contiguous()
