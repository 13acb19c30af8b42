"""A teacher you bring: a model file (autokd checkpoint, TorchScript, ONNX) or a factory, fitted to the data.

:func:`plan_source` decides, before anything trains, how the network meets the study's data:

- **its input**: the side, channels and normalisation it reads (``teacher.image_size``,
  ``teacher.mean``, ``teacher.std``; default: what its file says, else the data's own). The
  teacher sees the student's augmented view through :class:`autokd.distill.TeacherInput`.
- **its classes**: the data's in the data's order (nothing to do); the same names in another
  order (its file's class names or ``teacher.classes``: the logits are permuted); as many outputs
  but no names, and its validation predictions match the data's labels only once reordered
  (refused: give ``teacher.classes``); another number of classes (a new head, fine-tuned by the
  teacher recipe: :func:`autokd.teacher.build_teacher`; an ONNX file, which cannot be trained,
  is refused).

Every refusal is one :class:`AutokdError` naming the problem and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from autokd.config import StudyConfig
from autokd.data import ImageData
from autokd.distill import TeacherInput
from autokd.errors import AutokdError
from autokd.models.files import LoadedModel, classifier, load_factory, load_model_file

#: At most this many validation images are run to tell a reordered teacher (a cheap forward).
PROBE_IMAGES = 512


@dataclass
class SourcePlan:
    """How a brought network meets the data: its input, its outputs, what must happen to them."""

    loaded: LoadedModel
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    channels: int
    num_classes: int  # the network's outputs as the file gives them
    order: list[int] | None = None  # data class j is the network's output order[j]
    fine_tune: bool = False  # another number of classes: a new head, trained by the teacher recipe

    data_size: int = 0  # the data's side

    @property
    def trivial(self) -> bool:
        """Nothing between the data and the network but its normalisation."""
        return self.order is None and not self.fine_tune and self.image_size == self.data_size

    def description(self) -> str:
        """The member's name in the report: the file, and what was done to its classes."""
        done = " fine-tuned with a new head" if self.fine_tune else " (classes mapped by name)" if self.order else ""
        return self.loaded.description + done


def _floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def load_source(study: StudyConfig) -> LoadedModel:
    """The study's checkpoint file (recognised by content) or factory (its code run), loaded."""
    cfg = study.teacher
    if cfg.factory is not None:
        return load_factory(cfg.factory, Path(study.base_dir), cfg.knobs)
    return load_model_file(study.resolve(cfg.checkpoint))


def check_source(study: StudyConfig, loaded: LoadedModel | None = None) -> LoadedModel:
    """What can be checked without the data: the file is readable, the factory returns a module, the
    study's ``teacher.*`` input settings agree with an ONNX file's fixed shape."""
    cfg = study.teacher
    loaded = loaded or load_source(study)
    if loaded.kind == "onnx" and cfg.image_size and loaded.image_size and cfg.image_size != loaded.image_size:
        raise AutokdError(f"ONNX teacher {loaded.source} takes {loaded.image_size} px images, "
                          f"teacher.image_size is {cfg.image_size}",
                          f"set teacher.image_size to {loaded.image_size} or remove it")
    if cfg.classes and loaded.num_classes and len(cfg.classes) != loaded.num_classes:
        raise AutokdError(f"teacher.classes names {len(cfg.classes)} classes, teacher {loaded.source} has "
                          f"{loaded.num_classes} outputs", "list one name per output of the teacher, in order")
    return loaded


def plan_source(loaded: LoadedModel, data: ImageData, *, image_size: int | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                classes: Sequence[str] | None = None, seed: int = 0) -> SourcePlan:
    """How ``loaded`` meets ``data`` (the study's ``teacher.*`` settings win over the file's); refuses
    what cannot work, in one line, before anything trains."""
    where = f"teacher {loaded.source}"
    channels = loaded.channels or (len(mean) if mean else data.channels)
    if channels != data.channels and not (data.channels == 1 and channels == 3):
        raise AutokdError(f"{where} reads {channels}-channel images, the data has {data.channels}",
                          f"use a teacher made for {data.channels}-channel images")
    if mean is None:
        mean, std = loaded.mean or data.mean, loaded.std or data.std
        if len(mean) == 1 and channels == 3:  # grey data, RGB network: the grey statistics on each channel
            mean, std = tuple(mean) * 3, tuple(std) * 3
    if len(mean) != channels or len(std) != channels:
        raise AutokdError(f"{where} reads {channels} channels, its mean/std have {len(mean)}/{len(std)} values",
                          f"give teacher.mean and teacher.std with {channels} values each")
    side = image_size or loaded.image_size or data.image_size
    if loaded.kind == "onnx" and loaded.image_size and side != loaded.image_size:
        raise AutokdError(f"ONNX teacher {loaded.source} takes {loaded.image_size} px images, "
                          f"teacher.image_size is {side}", f"set teacher.image_size to {loaded.image_size}")
    if loaded.kind == "onnx" and loaded.num_classes and loaded.num_classes != data.num_classes:
        _refuse_onnx_classes(loaded, loaded.num_classes, data)
    plan = SourcePlan(loaded, tuple(map(float, mean)), tuple(map(float, std)), side, channels,
                      _outputs(loaded, data, side, mean, std), data_size=data.image_size)
    names = list(classes) if classes else loaded.classes
    named_by = "teacher.classes" if classes else f"the class names in {loaded.source}"
    if names is not None and len(names) != plan.num_classes:
        raise AutokdError(f"{named_by} name {len(names)} classes, {where} has {plan.num_classes} outputs",
                          "list one name per output of the teacher, in order, in teacher.classes")
    if plan.num_classes != data.num_classes:
        if loaded.kind == "onnx":
            _refuse_onnx_classes(loaded, plan.num_classes, data)
        if classifier(loaded.module) is None:
            raise AutokdError(f"{where} has {plan.num_classes} classes, the data has {data.num_classes}, and no "
                              "final linear layer to replace",
                              "give a teacher with the data's classes, or one whose classifier is a Linear layer")
        return dataclasses.replace(plan, fine_tune=True)
    if names is not None:
        wanted = list(data.classes)
        if names == wanted:
            return plan
        if sorted(names) != sorted(wanted):
            missing = [c for c in wanted if c not in names]
            raise AutokdError(f"{named_by} ({_listed(names)}) are not the data's classes ({_listed(wanted)}; "
                              f"'{missing[0]}' is not among them)",
                              "set teacher.classes to the data's class name of each teacher output, in order")
        return dataclasses.replace(plan, order=[names.index(c) for c in wanted])
    _refuse_reordered(plan, data, seed)
    return plan


def _refuse_onnx_classes(loaded: LoadedModel, num_classes: int, data: ImageData) -> None:
    raise AutokdError(f"ONNX teacher {loaded.source} has {num_classes} classes, the data has {data.num_classes}, and an "
                      "ONNX file cannot be fine-tuned",
                      "give the model as TorchScript (torch.jit.save) or teacher.factory: autokd then fine-tunes "
                      "a new head on the data")


def _listed(names: Sequence[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


@torch.inference_mode()
def _outputs(loaded: LoadedModel, data: ImageData, side: int, mean: Sequence[float], std: Sequence[float]) -> int:
    """The network's number of outputs, from one forward of two of the data's images as it will see them."""
    x = data.train_images[:2].float() / 255.0
    try:
        out = loaded.module(TeacherInput(mean, std, side)(x))
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise AutokdError(f"teacher {loaded.source} fails on the data's images as {len(mean)}x{side}x{side} "
                          f"({type(err).__name__}: {first})",
                          "set teacher.image_size, teacher.mean and teacher.std to the input the model takes") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AutokdError(f"teacher {loaded.source} gives {shape} for a batch of 2 images, not logits (2, classes)",
                          "give a model whose output is a (batch, classes) tensor of logits")
    if loaded.num_classes and out.shape[1] != loaded.num_classes:
        raise AutokdError(f"teacher {loaded.source} gives {out.shape[1]} outputs, its metadata says "
                          f"{loaded.num_classes}", "correct the file's metadata, or set teacher.classes")
    return int(out.shape[1])


@torch.inference_mode()
def _refuse_reordered(plan: SourcePlan, data: ImageData, seed: int) -> None:
    """Refuse a teacher without class names whose validation predictions fit the labels only reordered.

    The best one-to-one reordering (assignment on the confusion counts) is compared with the
    order as given: a gain of at least 20 points and more than the as-given accuracy means the
    outputs are the data's classes in another order, which names alone may map.
    """
    from scipy.optimize import linear_sum_assignment

    images, labels = (data.val_images, data.val_labels) if data.has_validation else (data.test_images, data.test_labels)
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:PROBE_IMAGES]
    model = nn.Sequential(TeacherInput(plan.mean, plan.std, plan.image_size), plan.loaded.module).eval()
    preds = torch.cat([model(images[pick[i:i + 128]].float() / 255.0).argmax(1) for i in range(0, len(pick), 128)])
    k = data.num_classes
    confusion = torch.zeros(k, k)
    confusion.index_put_((preds, labels[pick]), torch.ones(len(pick)), accumulate=True)  # (teacher output, label)
    rows, cols = linear_sum_assignment(confusion.numpy(), maximize=True)
    as_given = float(confusion.trace()) / len(pick)
    reordered = float(confusion[rows, cols].sum()) / len(pick)
    if reordered - as_given >= 0.2 and reordered > 2 * as_given:
        raise AutokdError(f"teacher {plan.loaded.source} looks like the data's classes in another order "
                          f"({100 * as_given:.0f}% of validation images right as given, {100 * reordered:.0f}% "
                          "reordered) and names none of its classes",
                          "set teacher.classes to the data's class name of each teacher output, in order")


def describe_source(study: StudyConfig) -> str:
    """One line for ``autokd check``: what the file or factory is and what the study sets of its input."""
    cfg = study.teacher
    loaded = check_source(study)
    what = {"autokd": "autokd checkpoint", "torchscript": "TorchScript", "onnx": "ONNX",
            "factory": "factory (runs your code)"}[loaded.kind]
    side = cfg.image_size or loaded.image_size
    size = f"{side} px" if side else "the data's size"
    norm = _floats(cfg.mean) + "/" + _floats(cfg.std) if cfg.mean else \
        ("normalised inside" if loaded.mean and set(loaded.mean) == {0.0} else
         f"mean/std {_floats(loaded.mean)}/{_floats(loaded.std)}" if loaded.mean else "the data's mean/std")
    outputs = f"{loaded.num_classes} classes" if loaded.num_classes else "classes known once run"
    names = " (named by teacher.classes)" if cfg.classes else " (named in the file)" if loaded.classes else ""
    return f"{what} {loaded.source}: input {size}, {norm}; {outputs}{names}"
