"""Teachers: trained once per study (or by ``autokd teacher train``), loaded, or ensembled.

A study whose teacher names only an architecture trains it once and stores it with the study
(``{output}/teacher.pt``); later runs and resumed studies reuse that file when its recipe matches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from autokd.checkpoint import deployable, load_checkpoint, network_from_checkpoint, save_checkpoint
from autokd.config import DistillSpec, StudyConfig, TeacherConfig, TrainSpec
from autokd.data import ImageData
from autokd.distill import Teacher, TeacherMember, fit_ensemble_weights, fit_joint_head
from autokd.errors import AutokdError
from autokd.measure import accuracy
from autokd.models import build_model, family_knobs, family_rules
from autokd.train import AugmentPolicy, predict, train_model


def train_teacher(data: ImageData, *, family: str, knobs: dict, epochs: int, lr: float, batch_size: int,
                  policy: AugmentPolicy, device: torch.device, seed: int = 0,
                  on_epoch: Callable[[int, dict], None] | None = None) -> tuple[torch.nn.Module, float]:
    """Train a network on labels alone; returns (network expecting normalised input, test accuracy).

    ``on_epoch`` sees validation accuracy when ``data`` has a validation split (a study's data
    always does), else test accuracy (``autokd teacher train`` on a source's train/test split).
    """
    torch.manual_seed(seed)
    net = build_model(family, num_classes=data.num_classes, in_channels=data.channels,
                      image_size=data.image_size, **knobs)
    model = deployable(net, data.mean, data.std).to(device)
    train_images, train_labels = data.train_images.to(device), data.train_labels.to(device)
    test_images, test_labels = data.test_images.to(device), data.test_labels.to(device)
    watch = (data.val_images, data.val_labels) if data.has_validation else (data.test_images, data.test_labels)
    watch_images, watch_labels = watch[0].to(device), watch[1].to(device)
    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=5e-4, optimizer="sgd",
                     schedule="onecycle", label_smoothing=0.1, seed=seed)
    train_model(model, train_images, train_labels, train=spec, distill=DistillSpec(loss="none"), policy=policy,
                evaluate=lambda m: accuracy(predict(m, watch_images), watch_labels), on_epoch=on_epoch)
    acc = accuracy(predict(model, test_images), test_labels)
    return net.cpu(), acc


def validate_teacher(study: StudyConfig) -> None:
    """Fail before any study is touched when the teacher names an unknown family, knob or file."""
    cfg = study.teacher
    for member in ([cfg.checkpoint] if cfg.checkpoint else []) + [m.checkpoint for m in cfg.ensemble or []]:
        load_checkpoint(study.resolve(member))
    if cfg.family is not None:
        known = family_knobs(cfg.family)  # unknown family -> AutokdError listing the known ones
        rules = family_rules(cfg.family)
        for knob, value in cfg.knobs.items():
            if knob not in known:
                raise AutokdError(f"teacher family '{cfg.family}' has no knob '{knob}'",
                                  f"use {', '.join(known) or 'no knobs'}")
            problem = rules[knob].problem(value)
            if problem:
                raise AutokdError(f"study: teacher.knobs.{knob} = {value!r} {problem}: must be {rules[knob]}",
                                  f"correct 'teacher.knobs.{knob}' in the study file")


def recipe_key(study: StudyConfig, data: ImageData) -> str:
    """What makes a study-trained teacher reusable: dataset content, architecture and recipe."""
    recipe = {"dataset": study.dataset, "n_train": len(data.train_labels), "n_test": len(data.test_labels),
              "n_val": len(data.val_labels) if data.has_validation else 0,
              "image_size": data.image_size, "teacher": study.teacher.model_dump(mode="json"), "seed": study.seed}
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def load_member(path: Path, data: ImageData) -> TeacherMember:
    payload = load_checkpoint(path)
    expected = (data.num_classes, data.channels, data.image_size)
    found = (int(payload["num_classes"]), int(payload["in_channels"]), int(payload["image_size"]))
    if found != expected:
        raise AutokdError(f"teacher {path} was trained for (classes, channels, size) {found}, the dataset has {expected}",
                          "train a teacher on this dataset with 'autokd teacher train'")
    net = network_from_checkpoint(payload, source=f"teacher {path}")
    return TeacherMember(net, tuple(payload["mean"]), tuple(payload["std"]), payload.get("accuracy"),
                         f"{payload['family']}({','.join(f'{k}={v}' for k, v in payload['knobs'].items())})")


def build_teacher(study: StudyConfig, data: ImageData, policy: AugmentPolicy, device: torch.device,
                  on_epoch: Callable[[int, dict], None] | None = None) -> tuple[Teacher, dict]:
    """The study's teacher on ``device`` plus a summary (kind, members, accuracies, weights, id)."""
    cfg: TeacherConfig = study.teacher
    if cfg.family is not None:
        path = study.output_dir / "teacher.pt"
        key = recipe_key(study, data)
        member = None
        if path.exists():
            payload = load_checkpoint(path)
            if payload.get("recipe") == key:
                member = load_member(path, data)
        if member is None:
            net, acc = train_teacher(data, family=cfg.family, knobs=cfg.knobs, epochs=cfg.epochs, lr=cfg.lr,
                                     batch_size=cfg.batch_size, policy=policy, device=device, seed=study.seed,
                                     on_epoch=on_epoch)
            save_checkpoint(path, net, family=cfg.family, knobs=net.knobs, num_classes=data.num_classes,
                            in_channels=data.channels, image_size=data.image_size, mean=data.mean, std=data.std,
                            accuracy=acc, dataset=study.dataset, recipe=key)
            member = load_member(path, data)
        members, weights, paths = [member], [1.0], [path]
    elif cfg.checkpoint is not None:
        paths = [study.resolve(cfg.checkpoint)]
        members, weights = [load_member(paths[0], data)], [1.0]
    else:
        paths = [study.resolve(m.checkpoint) for m in cfg.ensemble]
        members = [load_member(p, data) for p in paths]
        weights = [m.weight for m in cfg.ensemble]
        if cfg.fit_weights or any(w is None for w in weights):
            weights = fit_weights_on_validation(members, data, device, seed=study.seed)
    head = fit_head_on_validation(members, data, device, seed=study.seed) if cfg.joint_head else None
    teacher = Teacher(members, weights, head).to(device)
    splits = {"validation": _on_device(data.val_images, data.val_labels, device),
              "test": _on_device(data.test_images, data.test_labels, device)}
    member_models = [_member_model(m).to(device) for m in members]
    summary = {
        "kind": "ensemble" if len(members) > 1 else "single",
        "members": [m.description for m in members],
        **{f"member_{split}_accuracy": [accuracy(predict(model, images), labels) for model in member_models]
           for split, (images, labels) in splits.items()},
        "weights": teacher.weights,
        "params": sum(p.numel() for p in teacher.parameters()),
        **{f"{split}_accuracy": accuracy(predict(teacher, images), labels) for split, (images, labels) in splits.items()},
        "joint_head": head is not None,
        "id": hashlib.sha1(("".join(f"{p}:{p.stat().st_mtime_ns}:{w}" for p, w in zip(paths, teacher.weights))
                            + ("+head" if head is not None else "")).encode()).hexdigest()[:12],
    }
    summary["accuracy"] = summary["validation_accuracy"]
    return teacher, summary


def _on_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return images.to(device), labels.to(device)


def _member_model(member: TeacherMember) -> torch.nn.Module:
    return deployable(member.model, member.mean, member.std)


def _validation_logits(members: list[TeacherMember], data: ImageData,
                       device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The members' logits on the validation split (the study's, never the test split)."""
    if not data.has_validation:
        raise ValueError("fitting ensemble weights needs data with a validation split")
    images = data.val_images.to(device)
    return [predict(_member_model(m).to(device), images).cpu() for m in members], data.val_labels


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
