"""One trial, executor-agnostic: ``run_trial(config, context) -> metrics``.

The stages of a trial, in order, each a function of what it uses:

1. **build** (:func:`build_student`): the untrained student, from the config and the data's shape;
2. **distill** (:func:`distill_student`): trained from the study's ``teaching`` on the ``train``
   split, its epoch curve read on ``validation``;
3. **compress** (:func:`compress_stage`, :func:`autokd.compress.compress_model`): the distilled
   student pruned, factorized or quantized, fine-tuned by KD (:func:`finetune_student`);
4. **measure** (:func:`autokd.deployed.measure_model`): accuracy on ``validation`` and ``test``,
   size, MACs and latency, of the student before compressing (the record compares) and of the model
   that ships;
5. **save** (:func:`save_student`): the checkpoint, with the config and the data's shape.

A committee trial (kind ``cascade`` or ``pair``, :func:`committee_trial`) builds and distills two
members the same way, fits its routing on ``validation`` (:func:`autokd.committee.fit_committee`),
measures the committee as deployed and saves it. Only :func:`run_trial` and :func:`committee_trial`
see the study's :class:`autokd.context.TrialContext`; they hand each stage its pieces. Executors
(in-process, Ray Tune) only decide where :func:`run_trial` runs; nothing here knows about Optuna
storage or Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from autokd.checkpoint import EpochCheckpointer, deployable, save_checkpoint
from autokd.committee import committee_payload, fit_committee, load_member, measure_committee, second_config
from autokd.compress import checkpoint_entry, compress_model
from autokd.compress_rules import check_spec
from autokd.config import COMMITTEE_KINDS, CONSTRAINTS, DistillSpec, LatencySettings, TrialConfig
from autokd.context import Teaching, TrialContext
from autokd.data import ImageData
from autokd.hostlock import idle_during, paced, paused_seconds, study_scope
from autokd.deployed import measure_model, model_costs
from autokd.measure import Split, accuracy, environment
from autokd.models import build_model, describe
from autokd.train import predict, torch_threads, train_model

#: Failures that end one trial as FAIL and let the study go on (a diverged student, a shape a
#: family cannot take). Anything else stops the search.
TRIAL_FAILURES = (FloatingPointError, RuntimeError, ValueError)
#: Where a failed trial's traceback goes, inside its folder.
TRIAL_LOG = "trial.log"
#: Compression fine-tuning starts from a trained model: a fifth of the trial's peak lr.
FINETUNE_LR_SCALE = 0.2

OnEpoch = Callable[[int, dict], None]


def record_failure(work_dir: Path, err: BaseException) -> tuple[str, Path]:
    """Write ``err``'s traceback to the trial's log; returns (its one-line reason, the log path)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / TRIAL_LOG
    with open(log, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} trial failed\n")
        f.write("".join(traceback.format_exception(err)))
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300], log


def run_trial(config: TrialConfig, context: TrialContext, *, work_dir: Path, on_epoch: OnEpoch | None = None,
              checkpointer: EpochCheckpointer | None = None, resume_from: Path | None = None) -> dict[str, Any]:
    """Train, compress and measure one student; returns every figure plus where its weights are.

    ``on_epoch(epoch, metrics)`` sees each epoch's loss and validation accuracy and may raise to
    stop the trial. ``checkpointer`` keeps the last finished epoch; ``resume_from`` (a file it
    wrote) continues from there. Committee trials (pairs, cascades) have no epoch
    checkpoints: they start over.

    It runs on ``context.threads`` torch threads and in the study's lock scope
    (:func:`autokd.hostlock.study_scope`: with the opt-in lock on, a measurement pauses only this
    study's trials); the metrics say how many threads (``train_threads``) and how long its
    training sat at safe points for measurements of other trials of the study (``host_paused_s``).
    """
    with study_scope(context.lock_scope), torch_threads(context.threads):
        paused = paused_seconds()
        if config.kind in COMMITTEE_KINDS:
            metrics = committee_trial(config, context, work_dir=work_dir, on_epoch=on_epoch)
        else:
            metrics = single_trial(config, context, work_dir=work_dir, on_epoch=on_epoch, checkpointer=checkpointer,
                                   resume_from=resume_from)
        metrics.update(train_threads=torch.get_num_threads(), host_paused_s=paused_seconds() - paused)
    return metrics


def single_trial(config: TrialConfig, context: TrialContext, *, work_dir: Path, on_epoch: OnEpoch | None = None,
                 checkpointer: EpochCheckpointer | None = None, resume_from: Path | None = None) -> dict[str, Any]:
    """One student trained, compressed, measured and saved (the body of :func:`run_trial` for ``kind: single``)."""
    started = time.perf_counter()
    if config.compress.method != "none":  # a setting that cannot compress fails before training
        check_spec(config.compress)
    data = context.data
    measure = functools.partial(measure_model, validation=context.validation, test=context.test,
                                num_classes=data.num_classes, latency=context.latency, device=context.device)
    model = build_student(config, data).to(context.device)
    resume = None
    if resume_from is not None and resume_from.exists():
        resume = EpochCheckpointer.load(resume_from, context.device)
        model.load_state_dict(resume["model"])
    start = getattr(model[-1], "weights_info", {})  # the weights file it started from: loaded and new tensors
    metrics: dict[str, Any] = {"kind": "single", "resumed_from_epoch": int(resume["epoch"]) if resume else 0, **start}
    metrics.update(distill_student(model, config, context.teaching, context.train, context.validation,
                                   on_epoch=on_epoch, checkpointer=checkpointer, resume=resume,
                                   compile_model=context.compile))
    if config.compress.method == "none":
        metrics["compression"] = "none"
    else:
        model, compression = compress_stage(model, config, context.teaching, context.train, context.validation,
                                            num_classes=data.num_classes, uncompressed=measure(model))
        metrics.update(compression)
    metrics.update(measure(model))
    net, extra = (model[1] if isinstance(model, nn.Sequential) else model), {"kind": "single"}
    if metrics["compression"] != "none":  # recipe + compressed weights, see autokd.compress
        net, extra = nn.Module(), {"kind": "compressed", "compressed_module": checkpoint_entry(model, config.compress)}
    weights = save_student(work_dir, net, config, data, metrics, family=config.student.family,
                           knobs=config.student.knob_dict,
                           **{k: start[k] for k in ("weights_file", "weights_sha256") if k in start}, **extra)
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), **environment(context.device))
    return metrics


def committee_trial(config: TrialConfig, context: TrialContext, *, work_dir: Path,
                    on_epoch: OnEpoch | None = None) -> dict[str, Any]:
    """Members, routing fitted on validation, figures on validation (out of fold) and test, checkpoint.

    A committee has no epoch checkpoints: an interrupted committee trial starts over.
    """
    if config.second is None or config.kind not in COMMITTEE_KINDS:
        raise ValueError("a committee trial needs kind 'pair' or 'cascade' and a second student")
    started = time.perf_counter()
    members, identities, metrics = committee_members(config, context, on_epoch)
    committee, val_deferred, figures = fit_committee(config, members, identities, data=context.data,
                                                     validation=context.validation, test=context.test,
                                                     policy=context.teaching.policy)
    metrics.update(figures)
    metrics.update(measure_committee(committee, context.validation.images, val_deferred, context.latency))
    weights = save_student(work_dir, committee, config, context.data, metrics, family=config.kind, knobs={},
                           kind=config.kind, committee=committee_payload(committee))
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), compression="none", **environment(context.device))
    return metrics


def committee_members(config: TrialConfig, context: TrialContext, on_epoch: OnEpoch | None
                      ) -> tuple[list[nn.Module], list[Any], dict[str, Any]]:
    """The two members (deployable, eval mode), what each is (trial number or spec), and training figures.

    A reuse committee loads two finished single trials; otherwise each member is built and distilled
    as a single student is. ``on_epoch`` sees the first member's epochs as 0..E-1 and the second's as
    E..2E-1.
    """
    if config.reuse is not None:
        members = [load_member(Path(p), context.device) for p in config.reuse.weights]
        return members, list(config.reuse.trials), {"train_seconds": 0.0}
    members, seconds = [], 0.0
    for i, cfg in enumerate((config, second_config(config))):
        model = build_student(cfg, context.data).to(context.device)
        offset = i * config.train.epochs
        hook = None if on_epoch is None else (lambda e, m, offset=offset: on_epoch(e + offset, m))
        seconds += distill_student(model, cfg, context.teaching, context.train, context.validation, on_epoch=hook,
                                   compile_model=context.compile)["train_seconds"]
        members.append(model.eval())
    return members, [describe(m) for m in members], {
        "train_seconds": seconds, "teacher_path": "cache" if context.teacher is not None else "none"}


# --------------------------------------------------------------------------- the stages


def build_student(config: TrialConfig, data: ImageData) -> nn.Sequential:
    """The trial's student, seeded by ``train.seed``, taking [0, 1] input: untrained, or started from
    its spec's weights file (``net.weights_info`` says what was loaded)."""
    torch.manual_seed(config.train.seed)
    net = build_model(config.student.family, num_classes=data.num_classes, in_channels=data.channels,
                      image_size=data.image_size, weights=config.student.weights, **config.student.knob_dict)
    return deployable(net, data.mean, data.std)


#: The figures a network's architecture alone fixes: known before it trains (the untrained network
#: costs what the trained one does).
COSTS = ("params", "size_bytes", "macs", "latency_ms")


def cost_check(config: TrialConfig, data: ImageData, constraints: dict[str, float],
               latency: LatencySettings) -> tuple[str, float, float] | None:
    """The first cost constraint the trial's untrained student breaks: ``(constraint, value, bound)``, or None.

    Only an uncompressed single student's costs are final before training (compression changes
    them; a committee's latency depends on its routing). Latency is timed, as the study times it,
    only when a latency constraint asks.

    Example:
        >>> cost_check(TrialConfig(student=StudentSpec.of("cnn5", width=1.0)), data, {"max_params": 5000},
        ...            LatencySettings())
        ('max_params', 33194.0, 5000.0)
    """
    checked = {k: b for k, b in constraints.items() if CONSTRAINTS[k][0] in COSTS}
    if not checked or not costs_are_final(config):
        return None
    timed = any(CONSTRAINTS[k][0] == "latency_ms" for k in checked)
    costs = costs_before_training(config, data, latency if timed else None)
    for key, bound in checked.items():
        metric, kind = CONSTRAINTS[key]
        value = float(costs[metric])
        if (value > bound) if kind == "max" else (value < bound):
            return key, value, float(bound)
    return None


def costs_before_training(config: TrialConfig, data: ImageData, latency: LatencySettings | None) -> dict[str, Any]:
    """What the trial's untrained student costs (:func:`autokd.deployed.model_costs`); latency only when
    ``latency`` is given. Final for an uncompressed single student (:func:`costs_are_final`).

    The random state is left as it was: early stopping calls this between a trial's epochs, which
    must train as they would without it."""
    with torch.random.fork_rng(devices=[]):
        model = build_student(config, data).eval()
        example = torch.rand(1, data.channels, data.image_size, data.image_size)  # (1, C, H, W) in [0, 1]
        return model_costs(model, example, latency)


def costs_are_final(config: TrialConfig) -> bool:
    """Whether the untrained student costs what the trial's result will: not so once compressed, nor for a
    committee (its latency depends on its routing)."""
    return config.kind == "single" and config.compress.method == "none"


def cost_checker(constraints: dict[str, float], context: TrialContext | None
                 ) -> Callable[[TrialConfig], tuple[str, float, float] | None] | None:
    """:func:`cost_check` against the study's ``constraints`` for its proposals (None: nothing to check)."""
    if not constraints or context is None:
        return None
    return lambda config: cost_check(config, context.data, constraints, context.latency)


def distill_student(model: nn.Module, config: TrialConfig, teaching: Teaching, train: Split, validation: Split, *,
                    on_epoch: OnEpoch | None = None, checkpointer: EpochCheckpointer | None = None,
                    resume: dict | None = None, compile_model: bool = False) -> dict[str, Any]:
    """Train ``model`` from the teacher on ``train``; the epoch curve is accuracy on ``validation``.

    ``checkpointer`` keeps the last finished epoch; ``resume`` (what it saved) continues from it.

    Example:
        >>> model = build_student(config, context.data)
        >>> distill_student(model, config, context.teaching, context.train, context.validation)["history"]
    """
    mixup = config.distill.loss == "fm"
    with paced() as pace:  # gives way to a measurement elsewhere at every step; idle while reporting an epoch
        result = train_model(
            model, train.images, train.labels, train=config.train, distill=config.distill,
            policy=teaching.policy_for(mixup), teacher=teaching.teacher, logit_cache=teaching.logit_cache(mixup),
            evaluate=lambda m: accuracy(predict(m, validation.images, pace=pace), validation.labels),
            on_epoch=idle_during(on_epoch), checkpointer=checkpointer, resume=resume, compile_model=compile_model,
            pace=pace)
    return {"train_seconds": result.seconds, "compile_seconds": result.compile_seconds,
            "teacher_path": result.teacher_path, "history": result.history}


def finetune_student(model: nn.Module, epochs: int, *, config: TrialConfig, teaching: Teaching, train: Split) -> float:
    """KD fine-tuning of a compressed student from the teacher (labels only without one); returns seconds spent."""
    if teaching.teacher is not None:
        # Plain KD whatever the trial's loss: hint adapters do not survive a change of channels.
        distill = DistillSpec(loss="kd", alpha=config.distill.alpha, temperature=config.distill.temperature)
    else:
        distill = DistillSpec(loss="none")
    spec = dataclasses.replace(config.train, epochs=epochs, lr=config.train.lr * FINETUNE_LR_SCALE)
    with paced() as pace:
        result = train_model(model, train.images, train.labels, train=spec, distill=distill,
                             policy=teaching.policy_for(False), teacher=teaching.teacher,
                             logit_cache=teaching.logit_cache(False), pace=pace)
    return result.seconds


def compress_stage(model: nn.Module, config: TrialConfig, teaching: Teaching, train: Split, validation: Split, *,
                   num_classes: int, uncompressed: dict[str, Any]) -> tuple[nn.Module, dict]:
    """``config.compress`` applied to the distilled student, fine-tuned by KD from ``teaching`` on ``train``.

    ``uncompressed``: the student's own measurement (:func:`autokd.deployed.measure_model`), which
    the record keeps as ``uncompressed_*``.
    """
    finetune = functools.partial(finetune_student, config=config, teaching=teaching, train=train)
    return compress_model(model, config.compress, train=train, validation=validation, num_classes=num_classes,
                          uncompressed=uncompressed, finetune=finetune, seed=config.train.seed,
                          name=config.student.family)


def save_student(work_dir: Path, net: nn.Module, config: TrialConfig, data: ImageData, metrics: dict[str, Any], *,
                 family: str, knobs: dict[str, Any], **extra: Any) -> Path:
    """The trial's checkpoint (``work_dir/student.pt``): weights, config, the data's shape, test and validation accuracy."""
    return save_checkpoint(work_dir / "student.pt", net, family=family, knobs=knobs, num_classes=data.num_classes,
                           in_channels=data.channels, image_size=data.image_size, mean=data.mean, std=data.std,
                           config=config.to_json(), accuracy=metrics["test_accuracy"],
                           validation_accuracy=metrics["validation_accuracy"], **extra)
