"""Tests for autokd.data: digits, image folders (real CIFAR-10 JPEGs), the cache, splits, errors."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autokd import data as data_mod
from autokd.data import DATASET_NAMES, ImageData, check_memory, load_dataset
from autokd.errors import AutokdError

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _assert_same(a: ImageData, b: ImageData) -> None:
    assert a.classes == b.classes
    for f in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def _write_images(folder: Path, n: int, size: int = 16, mode: str = "RGB", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:03d}.png")


# ---- digits ----------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_split():
    d = load_dataset("digits")
    assert d.name == "digits" and d.classes == tuple("0123456789")
    assert d.train_images.shape == (1437, 1, 8, 8) and d.test_images.shape == (360, 1, 8, 8)
    assert d.train_images.dtype == torch.uint8 and d.train_labels.dtype == torch.int64
    assert d.train_images.is_contiguous() and d.test_images.is_contiguous()
    assert (d.num_classes, d.channels, d.image_size) == (10, 1, 8)
    assert int(d.train_images.max()) == 255 and int(d.train_images.min()) == 0
    # every class lands in both splits, roughly 80/20
    for c in range(10):
        n_tr, n_te = int((d.train_labels == c).sum()), int((d.test_labels == c).sum())
        assert abs(n_te / (n_tr + n_te) - 0.2) < 0.01
    expected = d.train_images.double() / 255
    assert d.mean[0] == pytest.approx(float(expected.mean()), abs=1e-9)
    assert d.std[0] == pytest.approx(float(expected.std(unbiased=False)), abs=1e-9)


def test_digits_is_deterministic_and_resizable():
    _assert_same(load_dataset("digits"), load_dataset("DIGITS"))
    big = load_dataset("digits", image_size=16)
    assert big.train_images.shape == (1437, 1, 16, 16)


def test_digits_read_directly_equal_scikit_learns():
    """The CSV read without importing sklearn.datasets gives exactly what load_digits gives."""
    from sklearn.datasets import load_digits

    from autokd.data.builtin import digits_arrays

    images, labels = digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


# ---- image folders on real CIFAR-10 JPEGs ------------------------------------------------------


def test_imagefolder_cifar_subset(cifar_subset_dir, tmp_path):
    d = load_dataset(f"imagefolder:{cifar_subset_dir}", cache_dir=tmp_path, show_progress=False)
    assert d.classes == CIFAR_CLASSES
    assert d.train_images.shape == (200, 3, 32, 32) and d.test_images.shape == (100, 3, 32, 32)
    assert d.train_images.dtype == torch.uint8 and d.train_images.is_contiguous()
    assert torch.equal(torch.bincount(d.train_labels), torch.full((10,), 20))
    assert torch.equal(torch.bincount(d.test_labels), torch.full((10,), 10))
    # labels follow the folders: image k of the train split is the k-th file of its class folder
    k = 3 * 20 + 5  # "cat", 6th file in sorted order
    cat_file = sorted((cifar_subset_dir / "train" / "cat").iterdir())[5]
    pixels = np.array(Image.open(cat_file).convert("RGB"))
    assert torch.equal(d.train_images[k], torch.from_numpy(pixels).permute(2, 0, 1))
    assert d.classes[int(d.train_labels[k])] == "cat"
    assert all(0.3 < m < 0.6 for m in d.mean) and all(0.15 < s < 0.35 for s in d.std)


def test_imagefolder_resizes_to_image_size(cifar_subset_dir, tmp_path):
    d = load_dataset(f"imagefolder:{cifar_subset_dir}", cache_dir=tmp_path, image_size=16, show_progress=False)
    assert d.train_images.shape == (200, 3, 16, 16)
    with pytest.raises(AutokdError, match="outside 8..224"):
        load_dataset(f"imagefolder:{cifar_subset_dir}", cache_dir=tmp_path, image_size=256)


def test_imagefolder_of_224_px_images_loads_and_small_images_resize_up_to_224(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(("a", "b")):
            _write_images(tmp_path / "big" / split / cls, n, size=224, seed=c)
            _write_images(tmp_path / "small" / split / cls, n, size=16, seed=c)
    big = load_dataset(f"imagefolder:{tmp_path / 'big'}", cache_dir=tmp_path / "cache", show_progress=False)
    assert big.train_images.shape == (6, 3, 224, 224) and big.test_images.shape == (4, 3, 224, 224)
    first = np.array(Image.open(sorted((tmp_path / "big" / "train" / "a").iterdir())[0]))
    assert torch.equal(big.train_images[0], torch.from_numpy(first).permute(2, 0, 1))
    up = load_dataset(f"imagefolder:{tmp_path / 'small'}", cache_dir=tmp_path / "cache", image_size=224,
                      show_progress=False)
    assert up.train_images.shape == (6, 3, 224, 224) and up.image_size == 224


def test_memory_is_checked_before_loading_with_a_one_line_error():
    with pytest.raises(AutokdError) as err:
        check_memory(50_000, 3, 224, "cifar10", available=2 * 2**30)
    text = str(err.value)
    assert "\n" not in text and "50000 images at 3x224x224 px need about 28.0 GiB" in text and "2.0 GiB is available" in text
    assert "--image-size" in text and "59 px would fit" in text  # 50000 * 3 * 59 * 59 * 4 bytes < 2 GiB
    check_memory(50_000, 3, 59, "cifar10", available=2 * 2**30)
    check_memory(50_000, 3, 32, "cifar10")  # this machine's own available memory holds CIFAR-10 at 32 px
    with pytest.raises(AutokdError, match="need about"):
        check_memory(10**9, 3, 224, "no machine holds this")


def test_cache_hit_skips_decoding(cifar_subset_dir, tmp_path, monkeypatch):
    spec = f"imagefolder:{cifar_subset_dir}"
    first = load_dataset(spec, cache_dir=tmp_path, show_progress=True)
    cache_files = list(tmp_path.glob("*.pt"))
    assert len(cache_files) == 1 and cache_files[0].name.startswith("imagefolder-")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(data_mod.decode, "_decode_image", no_decoding)
    _assert_same(first, load_dataset(spec, cache_dir=tmp_path, show_progress=True))


def test_changed_file_changes_cache_key(cifar_subset_dir, tmp_path):
    folder = tmp_path / "cifar"
    shutil.copytree(cifar_subset_dir, folder)
    cache = tmp_path / "cache"
    spec = f"imagefolder:{folder}"
    before = load_dataset(spec, cache_dir=cache, show_progress=False)
    # overwrite one image with another's bytes: size and mtime change, so must the key
    victim = sorted((folder / "train" / "airplane").iterdir())[0]
    donor = sorted((folder / "train" / "truck").iterdir())[0]
    victim.write_bytes(donor.read_bytes())
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = load_dataset(spec, cache_dir=cache, show_progress=False)
    assert len(list(cache.glob("*.pt"))) == 2
    assert torch.equal(after.train_images[0], after.train_images[9 * 20])
    assert not torch.equal(before.train_images[0], after.train_images[0])
    # a touch alone (same bytes, new mtime) is also a new key
    os.utime(donor, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    load_dataset(spec, cache_dir=cache, show_progress=False)
    assert len(list(cache.glob("*.pt"))) == 3
    # an added image is too
    shutil.copy(donor, folder / "test" / "truck" / "extra.jpg")
    added = load_dataset(spec, cache_dir=cache, show_progress=False)
    assert added.test_images.shape[0] == 101 and len(list(cache.glob("*.pt"))) == 4


def test_corrupt_cache_is_rebuilt(cifar_subset_dir, tmp_path):
    spec = f"imagefolder:{cifar_subset_dir}"
    good = load_dataset(spec, cache_dir=tmp_path, show_progress=False)
    (cache_file,) = tmp_path.glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    _assert_same(good, load_dataset(spec, cache_dir=tmp_path, show_progress=False))
    assert cache_file.stat().st_size > 1000 and not list(tmp_path.glob("*.tmp"))


def test_flat_class_folders_get_seeded_split(tmp_path):
    for i, cls in enumerate(("b", "a", "c")):
        _write_images(tmp_path / "flat" / cls, 10, seed=i)
    spec = f"imagefolder:{tmp_path / 'flat'}"
    d = load_dataset(spec, cache_dir=tmp_path / "cache", show_progress=False)
    assert d.classes == ("a", "b", "c")
    assert d.train_images.shape == (24, 3, 16, 16) and d.test_images.shape == (6, 3, 16, 16)
    assert torch.equal(torch.bincount(d.test_labels), torch.tensor([2, 2, 2]))
    again = load_dataset(spec, cache_dir=tmp_path / "other-cache", show_progress=False)
    _assert_same(d, again)


def test_grayscale_folder_keeps_one_channel_and_mixed_becomes_rgb(tmp_path):
    for cls in ("x", "y"):
        _write_images(tmp_path / "gray" / cls, 5, size=12, mode="L")
    d = load_dataset(f"imagefolder:{tmp_path / 'gray'}", cache_dir=tmp_path / "c", show_progress=False)
    assert d.channels == 1 and d.image_size == 12
    _write_images(tmp_path / "gray" / "z", 5, size=20, mode="RGB")  # other size: resized to 12
    d = load_dataset(f"imagefolder:{tmp_path / 'gray'}", cache_dir=tmp_path / "c", show_progress=False)
    assert d.channels == 3 and d.image_size == 12 and d.num_classes == 3


# ---- subset and validation -----------------------------------------------------------------


def test_subset_is_stratified_and_seeded():
    d = load_dataset("digits")
    s = d.subset(500, 100, seed=1)
    assert s.train_images.shape[0] == 500 and s.test_images.shape[0] == 100
    assert s.train_images.is_contiguous()
    full_share = torch.bincount(d.train_labels, minlength=10) / len(d.train_labels)
    sub_share = torch.bincount(s.train_labels, minlength=10) / 500
    assert (full_share - sub_share).abs().max() < 0.01
    _assert_same(s, d.subset(500, 100, seed=1))
    assert not torch.equal(s.train_images, d.subset(500, 100, seed=2).train_images)
    assert d.subset(None, 50).train_images is d.train_images
    with pytest.raises(AutokdError, match="cannot take 5000 train images"):
        d.subset(5000, None)


def test_validation_is_carved_stratified_seeded_and_disjoint():
    d = load_dataset("digits")
    search = d.with_validation(0.2, seed=3)
    assert len(search.train_labels) == 1437 - 288 and len(search.val_labels) == 288
    assert search.test_images is d.test_images and search.splits == ("train", "val", "test")
    counts = torch.bincount(search.val_labels, minlength=10)
    assert counts.min() >= 27 and counts.max() <= 31
    # the validation images come from the training split and are disjoint from what remains
    rows = lambda t: {bytes(x.numpy()) for x in t}  # noqa: E731
    assert rows(search.val_images) <= rows(d.train_images)
    assert len(rows(search.val_images) & rows(search.train_images)) <= 5  # a few digits repeat exactly
    again = d.with_validation(0.2, seed=3)
    assert torch.equal(search.val_images, again.val_images) and torch.equal(search.train_labels, again.train_labels)
    assert not torch.equal(search.val_images, d.with_validation(0.2, seed=4).val_images)
    assert search.with_validation(0.5) is search  # an existing validation split is kept
    with pytest.raises(AutokdError, match="validation fraction 1.0"):
        d.with_validation(1.0)


def test_validation_floor_gives_every_class_its_minimum():
    d = load_dataset("digits").subset(100, None, seed=0)  # about 10 images per class
    search = d.with_validation(0.02, seed=0, min_per_class=3)  # 2% would leave most classes empty
    assert torch.bincount(search.val_labels, minlength=10).min() >= 3
    assert torch.bincount(search.train_labels, minlength=10).min() >= 1


def test_imagefolder_val_folder_is_the_validation_split(cifar_subset_dir, tmp_path):
    import shutil

    root = tmp_path / "with-val"
    shutil.copytree(cifar_subset_dir, root)
    for cls_dir in (root / "train").iterdir():  # move 3 images of each class to val/<class>/
        (root / "val" / cls_dir.name).mkdir(parents=True)
        for f in sorted(cls_dir.iterdir())[:3]:
            f.rename(root / "val" / cls_dir.name / f.name)
    d = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c", show_progress=False)
    assert (len(d.train_labels), len(d.val_labels), len(d.test_labels)) == (170, 30, 100)
    assert d.with_validation(0.1) is d
    cached = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c", show_progress=False)
    assert torch.equal(cached.val_images, d.val_images)
    (root / "val" / "cat").rename(root / "val" / "kitten")
    with pytest.raises(AutokdError, match="train and val classes differ"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c", show_progress=False)


# ---- torchvision ---------------------------------------------------------------------------------


def _write_fake_mnist(root: Path, n_train: int = 30, n_test: int = 10) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_torchvision_mnist_from_local_files_is_cached(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "root")
    d = load_dataset("mnist", root=tmp_path / "root", cache_dir=tmp_path / "cache")
    assert d.train_images.shape == (30, 1, 28, 28) and d.test_images.shape == (10, 1, 28, 28)
    assert d.train_images.dtype == torch.uint8 and d.train_labels.tolist()[:3] == [0, 1, 2]
    assert d.num_classes == 10
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.pt")] == ["mnist"]
    assert d.mean[0] == pytest.approx(float(d.train_images.double().mean() / 255), abs=1e-9)
    small = load_dataset("mnist", root=tmp_path / "root", cache_dir=tmp_path / "cache", image_size=14)
    assert small.train_images.shape == (30, 1, 14, 14) and len(list((tmp_path / "cache").glob("*.pt"))) == 2
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "MNIST", None)  # a cache hit never builds the dataset
    _assert_same(d, load_dataset("mnist", root=tmp_path / "root", cache_dir=tmp_path / "cache"))


def test_torchvision_missing_files_names_dataset_and_root(tmp_path):
    with pytest.raises(AutokdError) as err:
        load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "cifar10" in msg and str(tmp_path) in msg and "--data-root" in msg and "--download" in msg
    assert "\n" not in msg
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(AutokdError, match="cifar10"):
        load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "cache")


# ---- errors --------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(AutokdError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", cache_dir=tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(AutokdError, match="no images found under"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", cache_dir=tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    for cls in ("a", "b"):
        _write_images(tmp_path / "ds" / cls, 4)
    bad = tmp_path / "ds" / "b" / "002.jpg"
    bad.write_bytes(b"\x00garbage, not a jpeg" * 10)
    with pytest.raises(AutokdError) as err:
        load_dataset(f"imagefolder:{tmp_path / 'ds'}", cache_dir=tmp_path / "c", show_progress=False)
    assert str(bad) in err.value.problem and "remove or replace" in err.value.fix


def test_train_and_test_classes_must_match(tmp_path):
    _write_images(tmp_path / "ds" / "train" / "a", 2)
    _write_images(tmp_path / "ds" / "train" / "b", 2)
    _write_images(tmp_path / "ds" / "test" / "a", 2)
    with pytest.raises(AutokdError, match="only in train: \\['b'\\]"):
        load_dataset(f"imagefolder:{tmp_path / 'ds'}", cache_dir=tmp_path / "c", show_progress=False)


def test_unknown_spec_lists_the_choices():
    with pytest.raises(AutokdError) as err:
        load_dataset("imagenet")
    assert all(name in str(err.value) for name in DATASET_NAMES) and "imagefolder:PATH" in str(err.value)


# ---- class folders without images, files that are not read ---------------------------------


def _two_class_folder(root: Path, splits: tuple[str, ...] = ("train", "test")) -> Path:
    for split in splits:
        for cls in ("cat", "dog"):
            _write_images(root / split / cls, 3, size=8)
    return root


@pytest.mark.parametrize("empty,named", [
    (("train", "test"), "class folders train/dog, test/dog under"),
    (("train",), "class folder train/dog under"),
    (("test",), "class folder test/dog under"),
    (("val",), "class folder val/dog under"),
], ids=["both", "train-only", "test-only", "val-only"])
def test_a_class_folder_without_images_is_an_error_naming_it(tmp_path, empty, named):
    """As torchvision's ImageFolder (allow_empty=False): a model with fewer classes than folders, or a
    class never validated or tested, is refused rather than dropped without a word."""
    root = _two_class_folder(tmp_path / "pets", ("train", "val", "test"))
    for split in empty:
        shutil.rmtree(root / split / "dog")
        (root / split / "dog").mkdir()
    for inspect in (data_mod.inspect_dataset, lambda spec: load_dataset(spec, cache_dir=tmp_path / "c")):
        with pytest.raises(AutokdError) as err:
            inspect(f"imagefolder:{root}")
        assert named in err.value.problem and "no images" in err.value.problem, err.value
        assert "remove dog/ from every split (train/, val/, test/)" in err.value.fix, err.value
    assert not (tmp_path / "c").exists()


def test_an_empty_class_folder_holding_only_other_files_says_so(tmp_path):
    root = _two_class_folder(tmp_path / "pets")
    shutil.rmtree(root / "test" / "dog")
    (root / "test" / "dog").mkdir()
    (root / "test" / "dog" / "a.tif").write_bytes(b"tiff")
    with pytest.raises(AutokdError) as err:
        data_mod.inspect_dataset(f"imagefolder:{root}")
    assert str(err.value) == (
        f"error: class folder test/dog under {root} has no images, only 1 file (a.tif) of a type autokd does not "
        f"read; fix: add .jpg/.jpeg/.png/.bmp/.webp images to {root / 'test' / 'dog'}, or remove dog/ from every "
        "split (train/, test/)")


def test_an_empty_class_folder_of_a_flat_folder_is_an_error(tmp_path):
    _write_images(tmp_path / "flat" / "cat", 5, size=8)
    (tmp_path / "flat" / "dog").mkdir()
    with pytest.raises(AutokdError, match="class folder dog under .* has no images") as err:
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", cache_dir=tmp_path / "c")
    assert err.value.fix.endswith("or remove the folder")


def test_files_that_are_not_read_are_one_warning_per_folder_and_hidden_files_are_silent(tmp_path):
    root = _two_class_folder(tmp_path / "pets")
    for name in ("notes.txt", "b.tif", "c.gif"):
        (root / "train" / "dog" / name).write_text("x")
    (root / "test" / "cat" / "sub").mkdir()
    (root / "test" / "cat" / "sub" / "scan.pdf").write_text("x")
    (root / "train" / "labels.csv").write_text("x")
    (root / "validation").mkdir()
    for hidden in (root / "train" / "cat" / ".DS_Store", root / "train" / "cat" / "._000.png",
                   root / "train" / "cat" / "Thumbs.db", root / "test" / "cat" / "desktop.ini", root / ".git"):
        hidden.write_text("x")
    _write_images(root / "train" / "cat" / ".ipynb_checkpoints", 1, size=8)
    expected = (
        f"ignored 1 entry in {root} (validation/): only its train/, val/ and test/ folders are read",
        f"skipped 3 files (e.g. b.tif) in {root / 'train' / 'dog'}: not .jpg/.jpeg/.png/.bmp/.webp images",
        f"skipped 1 file (labels.csv) directly in {root / 'train'}: only images in class folders train/<class>/ "
        "are read",
        f"skipped 1 file (sub/scan.pdf) in {root / 'test' / 'cat'}: not .jpg/.jpeg/.png/.bmp/.webp images",
    )
    info = data_mod.inspect_dataset(f"imagefolder:{root}")
    assert info.warnings == expected and info.split_sizes == {"train": 6, "test": 6}
    loaded = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c", show_progress=False)
    cached = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c", show_progress=False)
    assert loaded.warnings == cached.warnings == expected  # a cache hit warns as the first load did
    assert cached.with_validation(0.5).warnings == expected and cached.classes == ("cat", "dog")
    assert len(loaded.train_labels) == 6  # the hidden folder's image is not read either


def test_many_folders_with_skipped_files_give_at_most_six_lines(tmp_path):
    root = tmp_path / "flat"
    for i in range(8):
        _write_images(root / f"c{i}", 2, size=8)
        (root / f"c{i}" / "info.txt").write_text("x")
    warnings = data_mod.inspect_dataset(f"imagefolder:{root}").warnings
    assert len(warnings) == 6 and warnings[-1] == "... and skipped files in 3 more folders of the data set"
    assert warnings[0] == f"skipped 1 file (info.txt) in {root / 'c0'}: not .jpg/.jpeg/.png/.bmp/.webp images"


def test_a_clean_folder_and_builtin_sources_have_no_warnings(tmp_path):
    root = _two_class_folder(tmp_path / "pets")
    assert data_mod.inspect_dataset(f"imagefolder:{root}").warnings == ()
    assert load_dataset("digits").warnings == () and data_mod.inspect_dataset("digits").warnings == ()


def test_a_channel_that_never_varies_is_normalised_by_one_grey_level_not_zero(tmp_path):
    """Images whose blue channel is always 0: std 0 made every normalised input NaN ("training diverged")."""
    for cls, red in (("a", 30), ("b", 220)):
        (tmp_path / "flat" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (red, 10 * i, 0)).save(tmp_path / "flat" / cls / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path / 'flat'}", cache_dir=tmp_path / "c", show_progress=False)
    assert data.std[2] == pytest.approx(1 / 255) and data.std[0] > 0.3 and data.mean[2] == 0.0
    normalised = (data.train_images.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    assert torch.isfinite(normalised).all()
