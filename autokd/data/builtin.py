"""The named data sets: scikit-learn's ``digits`` and torchvision's sets under a local root."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autokd.data.cache import _cache_path, _file_stats, _read_cache, _write_cache
from autokd.data.images import ImageData, _split_by_labels, check_memory
from autokd.errors import AutokdError

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "svhn")
_DATA_ROOT_FIX = "pass --data-root DIR holding the torchvision files, or --download"


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 (N, C, H, W) to (N, C, size, size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    step = max(1, 2**25 // (images.shape[1] * max(size, images.shape[-1]) ** 2))  # float chunks of <= 128 MiB
    for start in range(0, len(images), step):
        chunk = images[start:start + step].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + step] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (1797, 8, 8) in 0..16, labels (1797,)): the CSV that
    ``sklearn.datasets.load_digits`` reads, read directly. Importing ``sklearn.datasets`` (scipy and
    all) took a third of the demo's start-up; it is the fallback where the file is not found."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    folders = list(spec.submodule_search_locations or ()) if spec else []
    csv = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if csv is not None and csv.is_file():
        with gzip.open(csv, "rt") as rows:
            table = np.loadtxt(rows, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def _load_digits(image_size: int | None) -> ImageData:
    raw, target = digits_arrays()
    pixels = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    images = torch.from_numpy(pixels).unsqueeze(1).contiguous()  # (1797, 1, 8, 8)
    if image_size is not None:
        images = _resize(images, image_size)
    labels = torch.from_numpy(target)
    return _split_by_labels("digits", tuple(str(d) for d in range(10)), images, labels)



# name -> (torchvision class, paths under root that hold its files, fixed class names or None)
_TORCHVISION: dict[str, tuple[str, tuple[str, ...], tuple[str, ...] | None]] = {
    "cifar10": ("CIFAR10", ("cifar-10-batches-py",), None),
    "cifar100": ("CIFAR100", ("cifar-100-python",), None),
    "mnist": ("MNIST", ("MNIST",), None),
    "fashion-mnist": ("FashionMNIST", ("FashionMNIST",), None),
    "svhn": ("SVHN", ("train_32x32.mat", "test_32x32.mat"), tuple(str(d) for d in range(10))),
}


def _torchvision_key(name: str, root: Path, image_size: int | None) -> dict | None:
    files: list[Path] = []
    for rel in _TORCHVISION[name][1]:
        p = root / rel
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
    if not files:
        return None
    return {"dataset": name, "root": str(root.resolve()), "image_size": image_size, "files": _file_stats(root, files)}


def _load_torchvision(name: str, root: Path, cache_dir: Path, download: bool, image_size: int | None) -> ImageData:
    key = _torchvision_key(name, root, image_size)
    if key is not None:
        cached = _read_cache(_cache_path(cache_dir, name, key), key)
        if cached is not None:
            return cached
    elif not download:
        raise AutokdError(f"{name} files not found under {root}", _DATA_ROOT_FIX)

    import torchvision.datasets as tvd

    cls_name, _, fixed_classes = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    splits = []
    for train in (True, False):
        kwargs = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
        try:
            splits.append(cls(str(root), download=download, **kwargs))
        except Exception as exc:  # torchvision signals missing/corrupt files and failed downloads loosely
            what = "could not download" if download else "files missing or corrupt for"
            raise AutokdError(f"{what} {name} under {root}: {exc}", _DATA_ROOT_FIX) from exc

    sizes = [np.asarray(ds.data).shape for ds in splits]  # (N, H, W[, C]) or SVHN's (N, C, H, W)
    check_memory(sum(s[0] for s in sizes), 1 if len(sizes[0]) == 3 else 3, image_size or sizes[0][-2], name)
    tensors = []
    for ds in splits:
        images = torch.as_tensor(np.asarray(ds.data))
        if images.dim() == 3:  # MNIST-like: (N, 28, 28)
            images = images.unsqueeze(1)
        elif name != "svhn":  # CIFAR: (N, 32, 32, 3); SVHN is already (N, 3, 32, 32)
            images = images.permute(0, 3, 1, 2)
        images = images.to(torch.uint8).contiguous()
        labels = torch.as_tensor(np.asarray(ds.labels if name == "svhn" else ds.targets), dtype=torch.int64)
        if image_size is not None:
            images = _resize(images, image_size)
        tensors += [images, labels]
    classes = fixed_classes or tuple(splits[0].classes)
    data = ImageData(name, classes, *tensors)

    key = _torchvision_key(name, root, image_size)  # after a download the files exist now
    if key is not None:
        _write_cache(_cache_path(cache_dir, name, key), key, data)
    return data
