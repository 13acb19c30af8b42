"""Datasets as uint8 tensors: the first stage of autokd's flow.

Every data set, whatever its source, becomes one :class:`ImageData`: uint8 ``(N, C, H, W)``
images and int64 labels for a train and a test split, held whole in memory so the training
loop can move them to the accelerator once and augment there. ``ImageData`` is pure (no I/O);
all reading, decoding and caching lives behind :func:`load_dataset`.

Sources:

* ``digits``: scikit-learn's 8x8 hand-written digits (bundled with scikit-learn, no files).
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``: torchvision's files under
  a local root (downloaded only when asked).
* ``imagefolder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (plus an optional
  ``PATH/val/<class>/*`` validation split, used instead of carving one), or class folders
  directly under ``PATH`` (then split 80/20, stratified and seeded).
  Every non-hidden subfolder is a class: one without images is an error (as torchvision's
  ``ImageFolder``), files that are not :data:`IMAGE_EXTENSIONS` images are skipped with one
  warning per folder (``ImageData.warnings``), hidden files and folders silently.
* ``csv:PATH`` (a ``.csv`` or ``.jsonl`` file; also ``jsonl:PATH``): one row per image with
  ``path`` (relative to the file) and ``label`` columns and an optional ``split``; the same
  files as an image folder give the same splits and arrays (:mod:`~autokd.data.table`).

Decoded torchvision, image-folder and table data sets are cached in ``cache_dir`` as one
``torch.save``'d file whose name carries a hash of every source file's path, size and mtime,
so a changed, added or removed file means a rebuild, and a corrupt cache file is rebuilt.

The modules, read top down: :mod:`~autokd.data.load` (the one door: a spec to a source),
:mod:`~autokd.data.builtin` (digits, torchvision); :mod:`~autokd.data.folder` (image folders) and
:mod:`~autokd.data.table` (CSV / JSON lines), which list files for :mod:`~autokd.data.listing` to
decode, split and cache; :mod:`~autokd.data.decode` (image files to arrays);
:mod:`~autokd.data.cache` (decoded arrays on disk); :mod:`~autokd.data.images` (the in-memory
:class:`ImageData`, its splits and size checks).
"""

from autokd.data.builtin import DATASET_NAMES
from autokd.data.decode import IMAGE_EXTENSIONS
from autokd.data.images import (BYTES_PER_VALUE, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, TEST_FRACTION, DatasetInfo, ImageData,
                                available_memory, check_memory)
from autokd.data.load import PATH_SOURCES, inspect_dataset, load_dataset

__all__ = ["DATASET_NAMES", "IMAGE_EXTENSIONS", "PATH_SOURCES", "DatasetInfo", "ImageData", "check_memory",
           "inspect_dataset", "load_dataset"]
