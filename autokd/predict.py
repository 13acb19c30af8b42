"""Run an export, or a trial's weights, on image files: what ``autokd predict`` does.

The export says how to feed it (:func:`autokd.export.read_metadata`): image size, colour mode,
class names. Images are decoded exactly as an image-folder study decodes them
(``autokd.data.decode._decode_all``: PIL, bilinear resize to the model's size), so an export run on its
study's own test files reproduces the trial's test accuracy.

Pure pieces: :func:`collect_samples` (paths -> files and labels), :func:`score` (logits -> rows and
accuracy), :func:`to_csv` / :func:`to_json` / :func:`predictions_table`. I/O at the edges:
:func:`open_model`, :func:`load_images`, :class:`Runner`.

Example:
    >>> runner = open_model(Path("runs/cifar/exports/trial00003.onnx"))
    >>> samples = collect_samples([Path("photos/")], runner.metadata["classes"])
    >>> result = score(runner.logits(load_images(samples, runner.metadata)), samples, runner.metadata["classes"])
    >>> result.accuracy  # None unless the folder is laid out class/image
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from autokd.data.decode import IMAGE_EXTENSIONS, _decode_all
from autokd.data.folder import _find_images, _list_classes, _not_images_warning, _scan_classes, _skip_warnings
from autokd.data.table import TABLE_SUFFIXES, read_table
from autokd.errors import AutokdError
from autokd.export import is_onnx, read_metadata

OUTPUT_FORMATS = ("table", "csv", "json")
BATCH_SIZE = 256


@dataclass(frozen=True)
class Sample:
    """One image file and its true class (from a ``class/image`` folder), or None."""

    path: Path
    label: str | None = None


@dataclass
class Prediction:
    path: str
    prediction: str
    confidence: float
    label: str | None = None

    @property
    def correct(self) -> bool | None:
        return None if self.label is None else self.label == self.prediction


@dataclass
class Result:
    """Per-image predictions and, for labelled images, accuracy overall and per class."""

    rows: list[Prediction]
    accuracy: float | None = None
    labelled: int = 0
    per_class: dict[str, tuple[int, int]] = field(default_factory=dict)  # class -> (correct, total)


# --------------------------------------------------------------------------- inputs


def collect_samples(paths: list[Path], classes: list[str], warnings: list[str] | None = None) -> list[Sample]:
    """The image files named by ``paths``, in order, with labels where a folder is laid out ``class/image``
    and for every row of a ``.csv`` / ``.jsonl`` table (``path`` and ``label`` columns, as ``csv:PATH``).

    A folder whose image-holding subfolders are all class names of the model is labelled; a folder
    with none is searched for images; a folder mixing class and other subfolders is refused.
    Files in a folder that are not images are skipped, one line per folder appended to ``warnings``
    (hidden files silently).
    """
    warnings = [] if warnings is None else warnings
    samples: list[Sample] = []
    known = set(classes)
    for path in map(Path, paths):
        if not path.exists():
            raise AutokdError(f"image path {path} does not exist", "pass image files or folders that exist")
        if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            samples += _table_samples(path, classes)
            continue
        if path.is_file():
            samples.append(Sample(path))
            continue
        by_class = _list_classes(path)
        matched = [c for c in by_class if c in known]
        if matched and len(matched) != len(by_class):
            others = sorted(set(by_class) - known)
            raise AutokdError(f"folder {path} mixes class folders ({', '.join(matched[:5])}) with folders that are "
                              f"no class of the model ({', '.join(others[:5])})",
                              f"keep only folders named after the model's classes ({', '.join(classes[:10])}"
                              f"{' ...' if len(classes) > 10 else ''}), or pass the images themselves")
        if matched:
            samples += [Sample(f, c) for c in by_class for f in by_class[c]]
            warnings += _skip_warnings({"": _scan_classes(path)}, path)
            continue
        files, others = _find_images(path)
        if others:
            warnings.append(_not_images_warning(others, path))
        if not files:
            raise AutokdError(f"no images found under {path}", f"put {'/'.join(IMAGE_EXTENSIONS)} files in it")
        samples += [Sample(f) for f in files]
    if not samples:
        raise AutokdError("no images given", "pass image files or folders after the model")
    return samples


def _table_samples(path: Path, classes: list[str]) -> list[Sample]:
    """Every row of a ``.csv``/``.jsonl`` table (as ``csv:PATH`` data sets read it), labelled by its ``label``."""
    rows = read_table(path)
    unknown = next((row for row in rows if row.label not in classes), None)
    if unknown is not None:
        raise AutokdError(f"{unknown.where}: label {unknown.label!r} is no class of the model",
                          f"label rows with the model's classes ({', '.join(classes[:10])}"
                          f"{' ...' if len(classes) > 10 else ''}), or remove the row")
    return [Sample(row.path, row.label) for row in rows]


def load_images(samples: list[Sample], metadata: dict[str, Any]) -> torch.Tensor:
    """Decode the samples as the model expects: uint8 (N, C, S, S) at its size and colour mode."""
    channels, size = int(metadata["input_shape"][1]), int(metadata["input_shape"][2])
    images = _decode_all([s.path for s in samples], size, show_progress=len(samples) > 2000,
                         description="decoding images")  # (N, 1 or 3, S, S): 1 when every file is grayscale
    return match_channels(images, channels)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, 1|3, S, S) -> (N, channels, S, S): gray repeated, colour to luma as PIL's ``L`` mode."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    rgb = images.to(torch.int64)  # PIL: L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16
    luma = (19595 * rgb[:, 0] + 38470 * rgb[:, 1] + 7471 * rgb[:, 2] + 0x8000) >> 16  # (N, S, S)
    return luma.to(torch.uint8)[:, None].contiguous()


# --------------------------------------------------------------------------- models


@dataclass
class Runner:
    """A model that maps [0, 1] float images (N, C, S, S) to logits, with the metadata that describes it."""

    metadata: dict[str, Any]
    forward: Callable[[np.ndarray], np.ndarray]
    source: str

    def logits(self, images_u8: torch.Tensor) -> np.ndarray:
        out = [self.forward((images_u8[i:i + BATCH_SIZE].float() / 255.0).numpy())
               for i in range(0, len(images_u8), BATCH_SIZE)]
        return np.concatenate(out).astype(np.float64)  # (N, K)


def open_model(path: Path) -> Runner:
    """An ONNX file (run by onnxruntime) or a TorchScript file written by ``autokd export``."""
    path = Path(path)
    metadata = read_metadata(path)  # also refuses a missing file or one without metadata
    if is_onnx(path):
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise AutokdError(f"onnxruntime cannot load {path} ({type(err).__name__})",
                              "re-export it with 'autokd export'") from None
        name = metadata.get("input_name", "image")
        return Runner(metadata, lambda x: np.asarray(session.run(None, {name: x.astype(np.float32)})[0]),
                      f"{path} (onnxruntime)")
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:
        raise AutokdError(f"cannot load TorchScript model {path} ({type(err).__name__})",
                          "re-export it with 'autokd export --format torchscript'") from None
    return module_runner(module, metadata, f"{path} (TorchScript)")


def module_runner(module: torch.nn.Module, metadata: dict[str, Any], source: str) -> Runner:
    """A PyTorch module (a trial's deployable model, or TorchScript) as a Runner."""

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
            return (out[0] if isinstance(out, (tuple, list)) else out).float().numpy()  # a committee: (logits, route)

    return Runner(metadata, forward, source)


# --------------------------------------------------------------------------- results


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def score(logits: np.ndarray, samples: list[Sample], classes: list[str]) -> Result:
    """Top-1 class and confidence per image; accuracy overall and per class over the labelled ones.

    Example:
        >>> score(np.array([[2.0, 0.0]]), [Sample(Path("a.png"), "cat")], ["cat", "dog"]).accuracy
        1.0
    """
    probs = softmax(logits)
    top = probs.argmax(axis=1)
    rows = [Prediction(str(s.path), classes[k], float(probs[i, k]), s.label) for i, (s, k) in enumerate(zip(samples, top))]
    labelled = [r for r in rows if r.label is not None]
    if not labelled:
        return Result(rows)
    per_class = {}
    for c in classes:
        of_class = [r for r in labelled if r.label == c]
        if of_class:
            per_class[c] = (sum(r.correct for r in of_class), len(of_class))
    accuracy = sum(r.correct for r in labelled) / len(labelled)
    return Result(rows, accuracy, len(labelled), per_class)


def to_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "prediction", "confidence", "label", "correct"])
    for r in result.rows:
        writer.writerow([r.path, r.prediction, f"{r.confidence:.6f}", r.label or "",
                         "" if r.correct is None else int(r.correct)])
    return buffer.getvalue()


def to_json(result: Result, metadata: dict[str, Any]) -> str:
    doc = {
        "model": {k: metadata.get(k) for k in ("study", "trial", "architecture", "test_accuracy") if k in metadata},
        "predictions": [{"path": r.path, "prediction": r.prediction, "confidence": round(r.confidence, 6),
                         **({"label": r.label, "correct": r.correct} if r.label is not None else {})}
                        for r in result.rows],
    }
    if result.accuracy is not None:
        doc.update(accuracy=result.accuracy, labelled=result.labelled,
                   per_class={c: {"accuracy": ok / n, "correct": ok, "images": n} for c, (ok, n) in result.per_class.items()})
    return json.dumps(doc, indent=2) + "\n"


def predictions_table(result: Result) -> Any:
    from rich.table import Table

    table = Table(title="predictions")
    table.add_column("image", overflow="fold")
    if result.accuracy is not None:
        table.add_column("true class", overflow="fold")
    table.add_column("predicted class", overflow="fold")
    table.add_column("confidence", justify="right")
    for r in result.rows:
        mark = "" if r.correct is None else (" [green]ok[/]" if r.correct else " [red]wrong[/]")
        cells = [r.path] + ([r.label or "-"] if result.accuracy is not None else [])
        table.add_row(*cells, r.prediction + mark, f"{100 * r.confidence:.1f}%")
    return table


def per_class_table(result: Result) -> Any:
    from rich.table import Table

    table = Table(title=f"accuracy {100 * result.accuracy:.2f}% on {result.labelled} labelled images")
    table.add_column("class", overflow="fold")
    table.add_column("accuracy", justify="right")
    table.add_column("correct / images", justify="right")
    for c, (ok, n) in result.per_class.items():
        table.add_row(c, f"{100 * ok / n:.1f}%", f"{ok} / {n}")
    return table
