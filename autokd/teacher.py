"""Teachers: trained once per study (or by ``autokd teacher train``), loaded, or ensembled.

A study whose teacher names an architecture trains it once with the teacher's recipe
(:class:`autokd.config.TeacherRecipe`) and stores it with the study (``{output}/teacher.pt``);
ensemble members the study trains are stored as ``{output}/teacher-member{i}.pt`` and a trained
JointNet as ``{output}/teacher-jointnet.pt``. Later runs, resumed studies and Ray workers reuse a
file only when its recipe key matches, so a cached teacher is never reused for another recipe.

A teacher you bring (``teacher.checkpoint``: an autokd checkpoint, TorchScript or ONNX file;
``teacher.factory``: your code) is fitted to the data by :mod:`autokd.teacher_source`; one of
other classes gets a new head, fine-tuned once by the teacher recipe and stored as
``{output}/teacher-finetuned.pt`` under the same rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from autokd.checkpoint import deployable, load_checkpoint, save_checkpoint, save_state
from autokd.config import DistillSpec, StudyConfig, TeacherConfig, TeacherRecipe
from autokd.data import ImageData
from autokd.distill import (ClassOrder, Teacher, TeacherInput, TeacherMember, final_linear, fit_ensemble_weights,
                            fit_joint_head, jointnet_loss)
from autokd.errors import AutokdError
from autokd.hostlock import idle_during, paced
from autokd.measure import accuracy, count_params
from autokd.models import build_model, family_knobs, family_rules, last_blocks
from autokd.models.files import load_model_file, replace_head
from autokd.models.weights import read_weights, sha256
from autokd.teacher_source import SourcePlan, check_source, load_source, plan_source
from autokd.train import (AugmentPolicy, BatchLoss, EpochViews, Pace, augmented_batch, autocast, no_pace,
                          optimization, predict, run_epochs, train_model)

EpochCallback = Callable[[int, dict], None]


def recipe_policy(recipe: TeacherRecipe, policy: AugmentPolicy, image_size: int) -> AugmentPolicy:
    """The study's augmentation with the recipe's ``crop``/``flip`` switches applied (unset: the study's)."""
    pad = policy.crop_pad
    if recipe.crop is not None:
        pad = (policy.crop_pad or max(1, image_size // 8)) if recipe.crop else 0
    flip = policy.flip if recipe.flip is None else recipe.flip
    return dataclasses.replace(policy, crop_pad=pad, flip=flip, mixup=False)


def train_teacher(data: ImageData, *, family: str, knobs: dict, policy: AugmentPolicy, device: torch.device,
                  recipe: TeacherRecipe | None = None, seed: int = 0, on_epoch: EpochCallback | None = None,
                  epochs: int | None = None, lr: float | None = None,
                  batch_size: int | None = None, weights: str | None = None) -> tuple[torch.nn.Module, float]:
    """Train a network on labels alone; returns (network expecting normalised input, test accuracy).

    ``recipe`` (default ``TeacherRecipe()``) sets the optimiser, schedule, weight decay, label
    smoothing and the crop/flip switches over ``policy``; ``epochs``, ``lr`` and ``batch_size``,
    when given, override it. ``weights``: a state dict file it starts from (a head of other classes
    is new), fine-tuned by the recipe. ``on_epoch`` sees validation accuracy when ``data`` has a validation
    split (a study's data always does), else test accuracy (``autokd teacher train``).
    """
    given = {k: v for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)) if v is not None}
    recipe = TeacherRecipe(**{**(recipe or TeacherRecipe()).recipe().model_dump(), **given})
    torch.manual_seed(seed)
    net = build_model(family, num_classes=data.num_classes, in_channels=data.channels,
                      image_size=data.image_size, weights=weights, **knobs)
    acc = fit_on_labels(deployable(net, data.mean, data.std), data, recipe=recipe, policy=policy, device=device,
                        seed=seed, on_epoch=on_epoch)
    return net.cpu(), acc


def fit_on_labels(model: nn.Module, data: ImageData, *, recipe: TeacherRecipe, policy: AugmentPolicy,
                  device: torch.device, seed: int = 0, on_epoch: EpochCallback | None = None) -> float:
    """Train ``model`` (taking [0, 1] input) on labels alone by ``recipe``; returns its test accuracy."""
    model = model.to(device)
    train_images, train_labels = data.train_images.to(device), data.train_labels.to(device)
    test_images, test_labels = data.test_images.to(device), data.test_labels.to(device)
    watch = (data.val_images, data.val_labels) if data.has_validation else (data.test_images, data.test_labels)
    watch_images, watch_labels = watch[0].to(device), watch[1].to(device)
    with paced() as pace:
        train_model(model, train_images, train_labels, train=recipe.train_spec(seed), distill=DistillSpec(loss="none"),
                    policy=recipe_policy(recipe, policy, data.image_size),
                    evaluate=lambda m: accuracy(predict(m, watch_images, pace=pace), watch_labels),
                    on_epoch=idle_during(on_epoch), pace=pace)
        return accuracy(predict(model, test_images, pace=pace), test_labels)


def validate_teacher(study: StudyConfig, data: ImageData | None = None, hint_losses: Sequence[str] = ()) -> None:
    """Fail before any study is touched when the teacher names an unknown family, knob, file or factory.

    With ``data``, a teacher file or factory is also fitted to it (:func:`autokd.teacher_source.plan_source`):
    an input or classes that cannot fit are refused here, before anything trains or is written.
    ``hint_losses`` (the space's ``hint``/``fitnets`` choices, :meth:`SearchSpace.hint_losses`) need a
    hint layer in the teacher (its first member's): a zoo family has one, a file or factory only if
    its module carries ``hint_layer``.
    """
    cfg = study.teacher
    members = cfg.ensemble or []
    first = None  # (where, loaded) when a file or factory gives the teacher's (first) network
    if cfg.checkpoint is not None or cfg.factory is not None:
        first = ("teacher", check_source(study))
        if data is not None:
            _plan(study, data, first[1])
    for member in (m for m in members if m.checkpoint):
        loaded = load_model_file(study.resolve(member.checkpoint))
        if members[0] is member:
            first = ("teacher.ensemble[0]", loaded)
        if data is not None:
            _member_plan(loaded, data)
    if hint_losses and first is not None and getattr(first[1].module, "hint_layer", None) is None:
        raise AutokdError(f"distill.loss {' and '.join(hint_losses)} needs the teacher's hint layer, and {first[0]} "
                          f"({first[1].source}) has none",
                          "drop hint/fitnets from the search space's distill.loss, or train a zoo teacher "
                          "(teacher.family) or put one first in teacher.ensemble")
    trained = [("teacher", cfg.family, cfg.knobs, cfg.weights)] if cfg.family is not None else []
    trained += [(f"teacher.ensemble[{i}]", m.family, m.knobs, m.weights) for i, m in enumerate(members) if m.family]
    for where, family, knobs, start in trained:
        if start is not None and data is None:
            read_weights(study.resolve(start))  # missing or corrupt
        elif start is not None:  # a weights file that does not fit the data (checked on the meta device)
            with torch.device("meta"):
                build_model(family, num_classes=data.num_classes, in_channels=data.channels,
                            image_size=data.image_size, weights=str(study.resolve(start)), **knobs)
        known = family_knobs(family)  # unknown family -> AutokdError listing the known ones
        rules = family_rules(family)
        for knob, value in knobs.items():
            if knob not in known:
                raise AutokdError(f"{where} family '{family}' has no knob '{knob}'",
                                  f"use {', '.join(known) or 'no knobs'}")
            problem = rules[knob].problem(value)
            if problem:
                raise AutokdError(f"study: {where}.knobs.{knob} = {value!r} {problem}: must be {rules[knob]}",
                                  f"correct '{where}.knobs.{knob}' in the study file")


def _digest(recipe: dict) -> str:
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _data_identity(study: StudyConfig, data: ImageData) -> dict:
    return {"dataset": study.dataset, "n_train": len(data.train_labels), "n_test": len(data.test_labels),
            "n_val": len(data.val_labels) if data.has_validation else 0, "image_size": data.image_size}


def recipe_key(study: StudyConfig, data: ImageData, policy: AugmentPolicy, member: int | None = None) -> str:
    """What makes a study-trained network reusable: the data, its architecture, its whole recipe
    (augmentation as resolved) and seed. ``member``: that ensemble member instead of ``teacher.family``."""
    cfg = study.teacher
    if member is None:
        family, knobs, recipe, seed, start = cfg.family, cfg.knobs, cfg.recipe(), study.seed, cfg.weights
    else:
        spec = cfg.ensemble[member]
        family, knobs, recipe, seed, start = (spec.family, spec.knobs, cfg.member_recipe(member), study.seed + member,
                                              spec.weights)
    started = {"weights": sha256(study.resolve(start))} if start else {}  # other weights: another network
    return _digest({**_data_identity(study, data), "family": family, "knobs": knobs, "seed": seed, **started,
                    "recipe": recipe.model_dump(mode="json"),
                    "augment": recipe_policy(recipe, policy, data.image_size).key()})


def load_member(path: Path, data: ImageData) -> TeacherMember:
    """A teacher (or ensemble member) from a file: an autokd checkpoint, TorchScript or ONNX, with the data's classes."""
    plan = _member_plan(load_model_file(path), data)
    return _member(plan, plan.loaded.module, plan.loaded.accuracy)


def _member_plan(loaded, data: ImageData) -> SourcePlan:
    plan = plan_source(loaded, data)
    if plan.fine_tune:
        raise AutokdError(f"ensemble member {loaded.source} has {plan.num_classes} classes, the data has "
                          f"{data.num_classes}", "give it as the single teacher.checkpoint first (autokd fine-tunes "
                          "a new head there), or an ensemble member with the data's classes")
    return plan


def _plan(study: StudyConfig, data: ImageData, loaded=None) -> SourcePlan:
    cfg = study.teacher
    return plan_source(loaded or load_source(study), data, image_size=cfg.image_size, mean=cfg.mean, std=cfg.std,
                       classes=cfg.classes, seed=study.seed)


def _member(plan: SourcePlan, net: nn.Module, accuracy_: float | None) -> TeacherMember:
    """The member the plan describes: ``net`` with its outputs in the data's order, its own input."""
    if plan.order is not None:
        net = ClassOrder(net, plan.order)
    # An autokd checkpoint used as trained keeps the data's input (and the teacher id it always had).
    own = plan.trivial and plan.loaded.kind == "autokd" and (plan.mean, plan.std) == (plan.loaded.mean, plan.loaded.std)
    return TeacherMember(net.eval(), plan.mean, plan.std, accuracy_, plan.description(),
                         image_size=None if own else plan.image_size)


def _brought_member(study: StudyConfig, data: ImageData, policy: AugmentPolicy, device: torch.device,
                    on_epoch: EpochCallback | None) -> tuple[TeacherMember, list[Path]]:
    """The study's teacher file or factory as a member, and the files that identify it.

    One of other classes gets a new head, fine-tuned by the teacher recipe once; the result is
    stored as ``{output}/teacher-finetuned.pt`` and reused while its key (the source's content,
    the data, the recipe, the teacher's input, the seed) matches.
    """
    plan = _plan(study, data)
    net, paths = plan.loaded.module, list(plan.loaded.identity)
    acc = plan.loaded.accuracy
    if plan.fine_tune:
        cfg = study.teacher
        path = study.output_dir / "teacher-finetuned.pt"
        key = _digest({**_data_identity(study, data), "source": [f"{p.name}:{sha256(p)}" for p in paths],
                       "factory": cfg.factory, "knobs": cfg.knobs, "seed": study.seed,
                       "input": [plan.image_size, plan.mean, plan.std], "recipe": cfg.recipe().model_dump(mode="json"),
                       "augment": recipe_policy(cfg.recipe(), policy, data.image_size).key()})
        replace_head(net, data.num_classes, seed=study.seed)
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        except Exception:  # a torn or foreign file is trained again, never trusted
            stored = None
        if isinstance(stored, dict) and stored.get("recipe") == key:
            net.load_state_dict(stored["state_dict"])
            acc = stored["accuracy"]
        else:
            model = nn.Sequential(TeacherInput(plan.mean, plan.std, plan.image_size), net)
            acc = fit_on_labels(model, data, recipe=cfg.recipe(), policy=policy, device=device, seed=study.seed,
                                on_epoch=on_epoch)
            save_state(path, {"recipe": key, "accuracy": acc,
                              "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}})
        paths.append(path)
    return _member(plan, net, acc), paths


def _trained_member(path: Path, key: str, data: ImageData, *, family: str, knobs: dict, recipe: TeacherRecipe,
                    policy: AugmentPolicy, device: torch.device, seed: int, dataset: str,
                    on_epoch: EpochCallback | None, weights: Path | None = None) -> TeacherMember:
    """The network trained with ``recipe`` (from ``weights`` when given): from ``path`` when its key
    matches, else trained and saved there."""
    if path.exists() and load_checkpoint(path).get("recipe") == key:
        return load_member(path, data)
    net, acc = train_teacher(data, family=family, knobs=knobs, recipe=recipe, policy=policy, device=device,
                             seed=seed, on_epoch=on_epoch, weights=str(weights) if weights else None)
    save_checkpoint(path, net, family=family, knobs=net.knobs, num_classes=data.num_classes,
                    in_channels=data.channels, image_size=data.image_size, mean=data.mean, std=data.std,
                    accuracy=acc, dataset=dataset, recipe=key, teacher_recipe=recipe.model_dump(mode="json"))
    return load_member(path, data)


def build_teacher(study: StudyConfig, data: ImageData, policy: AugmentPolicy, device: torch.device,
                  on_epoch: EpochCallback | None = None) -> tuple[Teacher, dict]:
    """The study's teacher on ``device`` plus a summary (kind, members, accuracies, weights, id)."""
    cfg: TeacherConfig = study.teacher
    common = dict(policy=policy, device=device, dataset=study.dataset, on_epoch=on_epoch)
    head = joint = None
    if cfg.family is not None:
        paths = [study.output_dir / "teacher.pt"]
        members = [_trained_member(paths[0], recipe_key(study, data, policy), data, family=cfg.family,
                                   knobs=cfg.knobs, recipe=cfg.recipe(), seed=study.seed,
                                   weights=cfg.weights and study.resolve(cfg.weights), **common)]
        weights = [1.0]
    elif cfg.checkpoint is not None or cfg.factory is not None:
        member, paths = _brought_member(study, data, policy, device, on_epoch)
        members, weights = [member], [1.0]
    else:
        paths, members = [], []
        for i, spec in enumerate(cfg.ensemble):
            if spec.checkpoint is not None:
                paths.append(study.resolve(spec.checkpoint))
                members.append(load_member(paths[-1], data))
            else:
                paths.append(study.output_dir / f"teacher-member{i}.pt")
                members.append(_trained_member(paths[-1], recipe_key(study, data, policy, member=i), data,
                                               family=spec.family, knobs=spec.knobs, recipe=cfg.member_recipe(i),
                                               seed=study.seed + i, weights=spec.weights and study.resolve(spec.weights),
                                               **common))
        weights = [m.weight for m in cfg.ensemble]
        if cfg.combine == "jointnet":
            weights = [1.0] * len(members)
        elif cfg.fit_weights or any(w is None for w in weights):
            weights = fit_weights_on_validation(members, data, device, seed=study.seed)
        if cfg.joint_head:
            head = fit_head_on_validation(members, data, device, seed=study.seed)
    if cfg.combine == "jointnet":
        path = study.output_dir / "teacher-jointnet.pt"
        teacher = _jointnet(path, study, data, policy, device, members, paths, on_epoch)
        paths.append(path)
    else:
        teacher = Teacher(members, weights, head).to(device)
    return teacher, _summary(teacher, members, paths, data, device)


def _summary(teacher: Teacher, members: list[TeacherMember], paths: list[Path], data: ImageData,
             device: torch.device) -> dict:
    """Each member's accuracy next to the teacher's, on validation and test (the report's teacher table)."""
    splits = {"validation": (data.val_images.to(device), data.val_labels.to(device)),
              "test": (data.test_images.to(device), data.test_labels.to(device))}
    member_models = [_member_model(m).to(device) for m in members]
    combined = "jointnet" if teacher.joint is not None else "head" if teacher.head is not None else "average"
    with paced() as pace:
        member_accuracies = {f"member_{split}_accuracy": [accuracy(predict(model, images, pace=pace), labels)
                                                          for model in member_models]
                             for split, (images, labels) in splits.items()}
        teacher_accuracies = {f"{split}_accuracy": accuracy(predict(teacher, images, pace=pace), labels)
                              for split, (images, labels) in splits.items()}
    summary = {
        "kind": "ensemble" if len(members) > 1 else "single",
        "ensemble": {"average": "avnet", "head": "joint_head", "jointnet": "jointnet"}[combined]
                    if len(members) > 1 else None,
        "members": [m.description for m in members],
        **member_accuracies,
        "weights": teacher.weights if combined == "average" else None,
        "params": count_params(teacher),
        **teacher_accuracies,
        "joint_head": combined != "average",
        "id": hashlib.sha1(("".join(f"{p}:{p.stat().st_mtime_ns}" for p in paths)
                            + f"{teacher.weights}+{combined}" + "".join(map(_input_key, members))
                            ).encode()).hexdigest()[:12],
    }
    summary["accuracy"] = summary["validation_accuracy"]
    return summary


def _input_key(member: TeacherMember) -> str:
    """What else makes a brought teacher's logits differ: its input and class order ('' for the study's own)."""
    if member.image_size is None and not isinstance(member.model, ClassOrder):
        return ""
    order = member.model.index.tolist() if isinstance(member.model, ClassOrder) else None
    return f"|{member.image_size}:{member.mean}:{member.std}:{order}"


def _member_model(member: TeacherMember) -> torch.nn.Module:
    return nn.Sequential(TeacherInput(member.mean, member.std, member.image_size), member.model)


def _validation_logits(members: list[TeacherMember], data: ImageData,
                       device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The members' logits on the validation split (the study's, never the test split)."""
    if not data.has_validation:
        raise ValueError("fitting ensemble weights needs data with a validation split")
    images = data.val_images.to(device)
    with paced() as pace:
        return [predict(_member_model(m).to(device), images, pace=pace).cpu() for m in members], data.val_labels


def fit_weights_on_validation(members: list[TeacherMember], data: ImageData, device: torch.device,
                              seed: int = 0) -> list[float]:
    """Ensemble weights fitted on the study's validation split."""
    logits, labels = _validation_logits(members, data, device)
    return fit_ensemble_weights(logits, labels, seed=seed)


def fit_head_on_validation(members: list[TeacherMember], data: ImageData, device: torch.device,
                           seed: int = 0) -> torch.nn.Linear:
    """A joint linear head over the members' logits, fitted on the study's validation split."""
    logits, labels = _validation_logits(members, data, device)
    return fit_joint_head(logits, labels, seed=seed).to(device)


# --------------------------------------------------------------------------- JointNet


def jointnet_parameters(teacher: Teacher) -> list[nn.Parameter]:
    """Freeze ``teacher`` except its members' last blocks and its joint head; returns those parameters."""
    teacher.requires_grad_(False)
    trainable = [block for net in teacher.members for block in last_blocks(net)] + [teacher.joint]
    for module in trainable:
        module.requires_grad_(True)
    return [p for module in trainable for p in module.parameters()]


def new_jointnet(members: list[TeacherMember], num_classes: int, seed: int = 0) -> Teacher:
    """An untrained JointNet over ``members``: a linear joint head over their concatenated features."""
    torch.manual_seed(seed)
    joint = nn.Linear(sum(final_linear(m.model).in_features for m in members), num_classes)
    return Teacher(members, joint=joint)


def train_jointnet(teacher: Teacher, data: ImageData, *, recipe: TeacherRecipe, policy: AugmentPolicy,
                   device: torch.device, seed: int = 0, on_epoch: EpochCallback | None = None,
                   pace: Pace = no_pace) -> list[dict]:
    """Train JointNet on the training split: members' last blocks and the joint head, on
    ``jointnet_loss`` (``CE(member 1) + CE(member 2) + ... + CE(joint)``). The epoch curve is the
    joint output's validation accuracy (when ``data`` has a validation split); the test split is
    never read. ``pace()`` runs before every step. Returns the per-epoch history."""
    teacher.to(device)
    params = jointnet_parameters(teacher)
    spec = recipe.train_spec(seed)
    policy = recipe_policy(recipe, policy, data.image_size)
    images, labels = data.train_images.to(device), data.train_labels.to(device)
    optimizer, scheduler = optimization(params, spec, len(images))
    history = []

    def epoch_loss(epoch: int, views: EpochViews) -> BatchLoss:
        for net in teacher.members:  # the frozen trunk keeps its batch-norm statistics
            for block in last_blocks(net):
                block.train()

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            with autocast(device):
                logits, features = teacher.member_outputs(augmented_batch(images, index, views, policy))
                return jointnet_loss(logits, teacher.combine(logits, features), labels[index],
                                     label_smoothing=spec.label_smoothing)
        return batch_loss

    def end_epoch(epoch: int, loss: float) -> None:
        teacher.eval()
        metrics = {"epoch": epoch + 1, "loss": loss}
        if data.has_validation:
            metrics["accuracy"] = accuracy(predict(teacher, data.val_images.to(device), pace=pace),
                                           data.val_labels.to(device))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    run_epochs(images, epoch_loss, optimizer=optimizer, scheduler=scheduler, batch_size=spec.batch_size,
               policy=policy, order_gen=torch.Generator().manual_seed(seed), epochs=range(spec.epochs),
               end_epoch=end_epoch, pace=pace, diverged="JointNet training diverged at epoch {epoch} (loss {loss})")
    teacher.requires_grad_(False)
    return history


def _jointnet(path: Path, study: StudyConfig, data: ImageData, policy: AugmentPolicy, device: torch.device,
              members: list[TeacherMember], sources: list[Path], on_epoch: EpochCallback | None) -> Teacher:
    """The study's JointNet: from ``path`` when its key (members' files, joint recipe, seed) matches, else trained."""
    recipe = study.teacher.joint_stage_recipe()
    key = _digest({**_data_identity(study, data), "seed": study.seed, "recipe": recipe.model_dump(mode="json"),
                   "augment": recipe_policy(recipe, policy, data.image_size).key(),
                   "members": [f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sources]})
    teacher = new_jointnet(members, data.num_classes, seed=study.seed)
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
    except Exception:  # a torn or foreign file is retrained, never trusted
        stored = None
    if isinstance(stored, dict) and stored.get("recipe") == key:
        for net, state in zip(teacher.members, stored["members"]):
            net.load_state_dict(state)
        teacher.joint.load_state_dict(stored["joint"])
        return teacher.to(device).requires_grad_(False)
    with paced() as pace:
        train_jointnet(teacher, data, recipe=recipe, policy=policy, device=device, seed=study.seed,
                       on_epoch=idle_during(on_epoch), pace=pace)
    save_state(path, {"recipe": key, "joint": {k: v.cpu() for k, v in teacher.joint.state_dict().items()},
                      "members": [{k: v.cpu() for k, v in net.state_dict().items()} for net in teacher.members]})
    return teacher
