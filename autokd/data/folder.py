"""``imagefolder:PATH``: class folders, split into train/test(/val) folders or not, listed and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autokd.data.cache import _file_stats
from autokd.data.decode import IMAGE_EXTENSIONS
from autokd.data.images import DatasetInfo, ImageData
from autokd.data.listing import Listing, inspect_listing, load_listing
from autokd.errors import AutokdError

_FOLDER_FIX = "pass imagefolder:DIR where DIR holds train/<class>/ and test/<class>/ folders, or class folders directly"


#: Operating-system bookkeeping files, never images a user meant: skipped without a word, like dotfiles
#: (``.DS_Store``, ``._photo.jpg``) and hidden folders (``.ipynb_checkpoints``, ``.git``).
_SILENT_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_MAX_FOLDER_WARNINGS = 5  # one warning line per folder up to this many, then one line for the rest
_EXTENSIONS = "/".join(IMAGE_EXTENSIONS)


def _silent(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SILENT_NAMES


@dataclass(frozen=True)
class _ClassScan:
    """The class folders of one folder: every non-hidden subfolder is a class, with or without images."""

    images: dict[str, list[Path]]  # class -> sorted image files (also an empty list)
    others: dict[str, list[Path]]  # class -> files in its folder that are not images autokd reads
    loose: list[Path]  # files directly in the folder, beside the class folders


def _scan_classes(folder: Path) -> _ClassScan:
    images: dict[str, list[Path]] = {}
    others: dict[str, list[Path]] = {}
    loose: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if _silent(entry.name):
            continue
        if not entry.is_dir():
            loose.append(entry)
            continue
        images[entry.name], others[entry.name] = _find_images(entry)
    return _ClassScan(images, others, loose)


def _find_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) anywhere under ``folder``, sorted; hidden files and folders are left out."""
    files = sorted(p for p in folder.rglob("*")
                   if not any(_silent(part) for part in p.relative_to(folder).parts) and p.is_file())
    return ([p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS],
            [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS])


def _not_images_warning(files: list[Path], folder: Path) -> str:
    return f"skipped {_files_note(files, folder)} in {folder}: not {_EXTENSIONS} images"


def _list_classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for each subfolder of ``folder`` that holds images."""
    return {name: files for name, files in _scan_classes(folder).images.items() if files}


def _files_note(files: list[Path], base: Path) -> str:
    """``"3 files (e.g. notes.txt)"``: how many, and the first one's path under ``base``."""
    example = files[0].relative_to(base).as_posix()
    return f"{len(files)} file{'s' * (len(files) != 1)} ({'e.g. ' * (len(files) != 1)}{example})"


def _skip_warnings(scans: dict[str, _ClassScan], path: Path) -> list[str]:
    """One line per folder whose files are not read: non-images in class folders, files beside them."""
    lines = []
    for split, scan in scans.items():
        folder = path / split if split else path
        for name, files in scan.others.items():
            if files:
                lines.append(_not_images_warning(files, folder / name))
        if scan.loose:
            where = f"{split}/<class>/" if split else "<class>/"
            lines.append(f"skipped {_files_note(scan.loose, folder)} directly in {folder}: only images in class "
                         f"folders {where} are read")
    if len(lines) > _MAX_FOLDER_WARNINGS:
        lines = lines[:_MAX_FOLDER_WARNINGS] + [f"... and skipped files in {len(lines) - _MAX_FOLDER_WARNINGS} more "
                                                "folders of the data set"]
    return lines


def _refuse_empty_classes(scans: dict[str, _ClassScan], path: Path) -> None:
    """A class folder without images is an error, as in torchvision's ImageFolder: dropping it would give
    the model fewer classes than the folders (train), or report a class that was never tested (val, test)."""
    empty = [(split, name) for split, scan in scans.items() for name, files in scan.images.items() if not files]
    if not empty:
        return
    shown = [f"{split}/{name}" if split else name for split, name in empty]
    listed = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
    first = path / shown[0]
    others = scans[empty[0][0]].others[empty[0][1]]
    one = len(empty) == 1
    unread = f", only {_files_note(others, first)} of a type autokd does not read" if one and others else ""
    names = sorted({name for _, name in empty})
    if len(scans) > 1:
        remove = f"remove {'/, '.join(names[:5])}/ from every split ({', '.join(f'{s}/' for s in scans)})"
    else:
        remove = "remove the folder" + "s" * (not one)
    raise AutokdError(
        f"class folder{'s' * (not one)} {listed} under {path} {'has' if one else 'have'} no images{unread}",
        f"add {_EXTENSIONS} images to {first if one else 'each'}, or {remove}",
    )


def _scan_image_folder(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], list[dict[str, list[Path]]], list[str]]:
    """An image folder's layout, listed and checked without decoding: (splits, classes, groups, warnings).

    ``splits`` is ``("train", "test")`` or ``("train", "val", "test")`` with one class -> files
    mapping per split in ``groups``, or ``()`` for class folders directly under ``path`` (one group).
    ``warnings`` are one line per folder with files that are not read (hidden files are skipped silently).
    """
    if not path.is_dir():
        raise AutokdError(f"dataset path {path} does not exist", _FOLDER_FIX)
    has_train, has_test = (path / "train").is_dir(), (path / "test").is_dir()
    if has_train != has_test:
        have, lack = ("train", "test") if has_train else ("test", "train")
        raise AutokdError(
            f"dataset path {path} has a {have}/ folder but no {lack}/ folder",
            f"add {path / lack}/<class>/ folders, or put class folders directly under {path} for an 80/20 split",
        )
    split_names = ("train", "val", "test") if (path / "val").is_dir() else ("train", "test")
    scans = {split: _scan_classes(path / split) for split in split_names} if has_train else {"": _scan_classes(path)}
    if not any(files for scan in scans.values() for files in scan.images.values()):
        where = f"{path}/train/<class>/ and {path}/test/<class>/" if has_train else f"class folders {path}/<class>/"
        raise AutokdError(f"no images found under {path}", f"put {_EXTENSIONS} files in {where}")
    _refuse_empty_classes(scans, path)
    warns = _skip_warnings(scans, path)
    if has_train:
        ignored = sorted(p for p in path.iterdir() if not _silent(p.name) and p.name not in split_names)
        if ignored:
            names = ", ".join(p.name + "/" * p.is_dir() for p in ignored[:3]) + (" ..." if len(ignored) > 3 else "")
            warns.insert(0, f"ignored {len(ignored)} entr{'y' if len(ignored) == 1 else 'ies'} in {path} ({names}): "
                            "only its train/, val/ and test/ folders are read")
        train = scans["train"].images
        for split in split_names[1:]:
            if list(train) != list(scans[split].images):
                only_train = sorted(set(train) - set(scans[split].images))
                only_other = sorted(set(scans[split].images) - set(train))
                raise AutokdError(
                    f"train and {split} classes differ under {path} (only in train: {only_train or 'none'}; only in {split}: {only_other or 'none'})",
                    f"give train/ and {split}/ the same class folders, each with at least one image",
                )
    classes = tuple(next(iter(scans.values())).images)
    return (split_names if has_train else ()), classes, [scan.images for scan in scans.values()], warns


def _folder_listing(path: Path) -> Listing:
    split_names, classes, groups, warns = _scan_image_folder(path)
    return Listing(f"imagefolder:{path.name}", split_names, classes, groups, tuple(warns))


def _load_image_folder(path: Path, cache_dir: Path, image_size: int | None, show_progress: bool) -> ImageData:
    path = path.resolve()
    listing = _folder_listing(path)
    key = {"path": str(path), "image_size": image_size, "layout": listing.layout,
           "files": _file_stats(path, listing.files)}
    return load_listing(listing, key, cache_dir, f"imagefolder-{path.name}", image_size, show_progress)


def _inspect_image_folder(path: Path, image_size: int | None) -> DatasetInfo:
    """The folder listed and checked as :func:`_load_image_folder` would, one image header read."""
    return inspect_listing(_folder_listing(path), image_size)
