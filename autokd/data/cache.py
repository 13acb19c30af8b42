"""The decoded-array cache: one ``torch.save``'d file per data set, named by a hash of its key.

A key lists every source file's path, size and mtime, so a changed, added or removed file means a
rebuild; a corrupt, stale or unreadable cache file is rebuilt too, and an unwritable cache only
costs speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch

from autokd.data.images import ImageData

_CACHE_FORMAT = 2  # bump when the cache layout changes so old files are rebuilt, never misread


def _cache_path(cache_dir: Path, readable: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', readable).strip('_')}-{digest}.pt"


def _read_cache(path: Path, key: dict) -> ImageData | None:
    """The cached data set, or None when absent, unreadable, stale or malformed (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != _CACHE_FORMAT or blob.get("key") != json.dumps(key, sort_keys=True):
            return None
        return ImageData(name=blob["name"], classes=tuple(blob["classes"]),
                         **{f"{split}_{part}": blob[f"{split}_{part}"] for split in blob["splits"]
                            for part in ("images", "labels")})
    except Exception:  # any damage means "not cached": the caller rebuilds and overwrites it
        return None


def _write_cache(path: Path, key: dict, data: ImageData) -> None:
    blob = {
        "format": _CACHE_FORMAT, "key": json.dumps(key, sort_keys=True),
        "name": data.name, "classes": list(data.classes), "splits": list(data.splits),
        **{f"{split}_{part}": getattr(data, f"{split}_{part}") for split in data.splits for part in ("images", "labels")},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
            os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a read-only cache only costs speed, never the run
        warnings.warn(f"could not write dataset cache {path}: {exc}", stacklevel=3)


def _file_stats(base: Path, files: list[Path]) -> list[list]:
    stats = []
    for f in files:
        st = f.stat()
        stats.append([f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns])
    return stats
