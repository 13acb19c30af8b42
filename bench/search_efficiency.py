"""Search efficiency (issue 26): hypervolume against compute for autokd's search, random search and
NSGA-II, with the published hand-picked recipes (studies/seed-recipes*.yaml) as points.

On digits (the default study's space, search_spaces/default.yaml) and on a CIFAR-10 subset (the
CIFAR-10 study's space, search_spaces/cifar10.yaml, epochs scaled to CPU size), each with ``--seeds``
(3 by default), every arm runs ``autokd search`` in this process through the CLI, on the local
executor with one torch thread (deterministic for a seed, and it fits a 2-core host):

    (a) autokd's search (TPE) with early stopping (``early_stopping: true``, where the study config has
        the key; else the entry says "not available"); the keys keep the name ``a_default_early_stopping``
        from when early stopping was on by default
    (b) the same without early stopping: autokd's default search since these results (docs/methodology.md)
    (c) random search (``sampler: random``)
    (d) NSGA-II (``sampler: nsga2``)
    recipes: the seed-recipes study of that space (its enqueued configurations, nothing sampled)

Every arm of one dataset and seed uses the same teacher (trained by the first arm's study, then loaded as a
checkpoint: same seed, same validation split) and the same ``n_trials``. The studies optimise what
the hypervolume scores: objectives ``[accuracy, params]`` (validation accuracy, maximised; parameters,
minimised); latency is left out because on a shared host it measures the load.

**Hypervolume.** Validation chooses the front (the non-dominated COMPLETE trials by validation
accuracy and params), test scores it: each front member is the point (normalised test error, log
params) with normalised error ``(1 - test accuracy) / (1 - 1/classes)`` (0: perfect, 1: chance) and
``(log10(params) - 3) / 4`` clipped to [0, 1] (0: 1k parameters, 1: 10M). The **reference point is
fixed at (1, 1)**: chance accuracy at 10M parameters, so hypervolumes lie in [0, 1] and compare across
arms, seeds and runs. Compute is counted two ways over every trial the study ran (pruned and failed
ones included, proposals replaced before training cost nothing): trial-seconds (``trial_seconds``,
else the trial's wall time) and student epochs (epochs trained). Curves give the hypervolume of the
trials finished within each fraction of the largest final compute of the four arms (same dataset and
seed); ``reach_c_final`` is the compute at which an arm first reaches random search's final
hypervolume. A recipe is dominated when a member of the arm's final front (chosen on validation) has
at least its test accuracy at no more parameters, one of them strictly.

    python -m bench.search_efficiency            # full: digits + CIFAR-10 subset, seeds 0,1,2 (not yet timed)
    python -m bench.search_efficiency --quick    # smoke run: seed 0, 4 trials, short training (6 min, loaded 2 cores)
    python -m bench.search_efficiency --only digits --seeds 0,1 --n-trials 24
    python -m bench.search_efficiency --only cifar10 --out search_efficiency-cifar10   # one dataset per file
    python -m bench.search_efficiency --only cifar10 --reanalyse /tmp/s0 /tmp/s1 /tmp/s2   # seeds run apart (--keep)
    python -m bench.search_efficiency --only cifar10 --seeds 1 --reanalyse /tmp/s1 \\
        --with-seeds-from bench/results/search_efficiency-cifar10.json   # with seed 0 of an earlier result

Results: bench/results/search_efficiency.json (device, versions, date, load average, commit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from bench.common import cifar10_subset, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
#: log10(params) mapped to [0, 1]: 1k .. 10M parameters.
LOG_PARAMS = (3.0, 7.0)
#: The fixed reference point (normalised test error, normalised log params): chance accuracy at 10M params.
REFERENCE = (1.0, 1.0)
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ARMS = {"a_default_early_stopping": {"sampler": "tpe", "early_stopping": True},
        "b_default": {"sampler": "tpe", "early_stopping": False},
        "c_random": {"sampler": "random", "early_stopping": False},
        "d_nsga2": {"sampler": "nsga2", "early_stopping": False}}


@dataclass(frozen=True)
class Scale:
    """How big a run is: trials per search, seeds, and the training sizes of each dataset."""

    name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    digits_trials: int = 16
    digits_epochs: int | None = None  # None: the digits space's own (12)
    digits_teacher_epochs: int = 12
    cifar_trials: int = 12
    cifar_train_per_class: int = 200
    cifar_test_per_class: int = 100
    cifar_epoch_factor: float = 0.1  # the space's 10/20/30 epochs -> 1/2/3
    cifar_teacher_epochs: int = 10


FULL = Scale("full")
QUICK = Scale("quick", seeds=(0,), digits_trials=4, digits_epochs=2, digits_teacher_epochs=3, cifar_trials=4,
              cifar_train_per_class=30, cifar_test_per_class=20, cifar_epoch_factor=1 / 30, cifar_teacher_epochs=2)


# --------------------------------------------------------------------------- hypervolume and fronts


def point(row: dict, classes: int) -> tuple[float, float]:
    """(normalised test error, normalised log10 params) of a trial row."""
    error = (1.0 - row["test_accuracy"]) / (1.0 - 1.0 / classes)
    lo, hi = LOG_PARAMS
    return error, min(1.0, max(0.0, (math.log10(row["params"]) - lo) / (hi - lo)))


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float] = REFERENCE) -> float:
    """The area dominated by ``points`` (both minimised) and bounded by ``reference``.

    >>> hypervolume([(0.5, 0.5)]), hypervolume([(0.2, 0.8), (0.6, 0.4)]), hypervolume([(1.5, 0.1)])
    (0.25, 0.32, 0.0)
    """
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    # sweep by x: a point below every earlier one adds the strip from its x to the reference, between its y
    # and the lowest y before it
    area, best_y = 0.0, reference[1]
    for x, y in inside:
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return round(area, 6)


def validation_front(rows: list[dict]) -> list[dict]:
    """The COMPLETE rows no other dominates on (validation accuracy max, params min)."""
    done = [r for r in rows if r["state"] == "COMPLETE"]

    def dominates(a: dict, b: dict) -> bool:
        return (a["validation_accuracy"] >= b["validation_accuracy"] and a["params"] <= b["params"]
                and (a["validation_accuracy"] > b["validation_accuracy"] or a["params"] < b["params"]))

    return [r for r in done if not any(dominates(o, r) for o in done)]


def front_hypervolume(rows: list[dict], classes: int) -> float:
    return hypervolume([point(r, classes) for r in validation_front(rows)])


def with_cumulative(rows: list[dict]) -> list[dict]:
    """Rows in the order they finished, each with the compute spent up to and including it."""
    seconds = epochs = 0.0
    out = []
    for row in sorted(rows, key=lambda r: r["finished"]):
        seconds += row["seconds"]
        epochs += row["epochs"]
        out.append({**row, "cum_seconds": seconds, "cum_epochs": epochs})
    return out


def curve(rows: list[dict], classes: int, total: float, key: str) -> dict[str, float]:
    """Hypervolume of the trials finished within each fraction of ``total`` compute (``key``: cum_seconds/cum_epochs)."""
    return {f"{f:.1f}": front_hypervolume([r for r in rows if r[key] <= f * total + 1e-9], classes) for f in FRACTIONS}


def reach(rows: list[dict], classes: int, target: float, key: str) -> float | None:
    """The compute at which the hypervolume of the trials finished so far first reaches ``target`` (None: never,
    or a target of 0, which every search reaches before it starts)."""
    if target <= 0:
        return None
    for i, row in enumerate(rows):
        if front_hypervolume(rows[:i + 1], classes) >= target - 1e-9:
            return round(row[key], 2)
    return None


def recipe_verdicts(front: list[dict], recipes: list[dict]) -> list[dict]:
    """For each recipe: the front members (chosen on validation) that dominate it on test accuracy and params."""
    verdicts = []
    for recipe in recipes:
        by = [m["trial"] for m in front
              if m["test_accuracy"] >= recipe["test_accuracy"] and m["params"] <= recipe["params"]
              and (m["test_accuracy"] > recipe["test_accuracy"] or m["params"] < recipe["params"])]
        verdicts.append({"recipe": recipe["recipe"], "dominated": bool(by), "dominated_by_trials": by})
    return verdicts


# --------------------------------------------------------------------------- running studies


def cli(*args: str) -> str:
    from typer.testing import CliRunner

    from autokd.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})
    if result.exit_code != 0:
        raise SystemExit(f"autokd {' '.join(args)} exited {result.exit_code}:\n{result.output[-4000:]}")
    return result.output


def trial_rows(study: optuna.Study) -> list[dict]:
    """Every trial that ran (finished, pruned or failed after training began) with its figures and compute."""
    from autokd.record import enqueued_from, is_duplicate, is_rejected, recorded_seconds, trial_figures

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.datetime_complete is None or is_duplicate(t) or is_rejected(t):
            continue
        figures = trial_figures(t)
        seconds = recorded_seconds(t)
        if seconds is None:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        # a finished trial's history, else the per-epoch curve early stopping keeps, else the last reported epoch
        epochs = (len(figures.get("history") or []) or len(figures.get("epoch_accuracy") or [])
                  or int(figures.get("epoch") or 0))
        rows.append({"trial": t.number, "state": t.state.name, "student": figures.get("architecture"),
                     "recipe": recipe_label(figures) if enqueued_from(t) else None,
                     "validation_accuracy": figures.get("validation_accuracy"),
                     "test_accuracy": figures.get("test_accuracy"), "params": figures.get("params"),
                     "seconds": round(seconds, 3), "epochs": epochs, "finished": t.datetime_complete.timestamp(),
                     "enqueued_from": enqueued_from(t), "pruned_because": figures.get("pruned_because"),
                     "configuration": json.dumps(t.params, sort_keys=True)})
    return rows


def recipe_label(figures: dict) -> str:
    """``enqueue[2]: vgg(variant=7,width=0.25) kd a=0.5 T=1.5``: which recipe a trial ran, and how it distilled."""
    config = figures.get("config") or {}
    how = config.get("loss", "?")
    if how in ("kd", "hint", "fitnets"):
        how += f" a={config.get('alpha')}"
    if how != "none":
        how += f" T={config.get('temperature')}"
    return f"{figures.get('enqueued_from', '').split(' of ')[0]}: {figures.get('architecture')} {how}"


def run_study(root: Path, name: str, study: dict) -> tuple[list[dict], float]:
    """Write ``study`` as ``root/name.yaml``, run ``autokd search`` on it; returns its trial rows and wall seconds."""
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "output": str(root / "runs" / name), **study}, sort_keys=False))
    started = time.perf_counter()
    cli("search", str(path))
    wall = time.perf_counter() - started
    loaded = optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'runs' / name / 'study.db'}")
    return trial_rows(loaded), wall


def threads_key() -> bool:
    """Whether studies set a trial's torch threads (``executor.threads_per_trial``): the bench pins it to 1."""
    from autokd.config import ExecutorConfig

    return "threads_per_trial" in ExecutorConfig.model_fields


def early_stopping_available() -> bool:
    from autokd.config import StudyConfig

    return "early_stopping" in StudyConfig.model_fields


def scale_epochs(value: Any, factor: float) -> Any:
    """A space's ``train.epochs`` (a number or ``{choices: [...]}``) times ``factor``, at least 1 each."""
    if isinstance(value, dict):
        choices = sorted({max(1, round(c * factor)) for c in value["choices"]})
        return choices[0] if len(choices) == 1 else {"choices": choices}
    return max(1, round(value * factor))


def cifar_subset(root: Path, train: int, test: int) -> Path:
    """The first ``train``/``test`` images per class of the CIFAR-10 JPEG tarball as an image folder under
    ``data/`` (git-ignored), streamed once and kept for later runs."""
    target = root / f"cifar10-subset-{train}-{test}"
    if (target / "done").is_file():
        return target
    wanted = {"train": train, "test": test}
    cifar10_subset(target, wanted)
    images = sum(1 for p in target.rglob("*") if p.is_file())
    (target / "done").write_text(json.dumps({"per_class": wanted, "images": images}))
    return target


# --------------------------------------------------------------------------- datasets and arms


def recipes_of(study_file: str, epoch_factor: float | None) -> list[dict]:
    """The ``enqueue:`` entries of a seed-recipes study, epochs scaled as its space is."""
    entries = yaml.safe_load((REPO / "studies" / study_file).read_text())["enqueue"]
    if epoch_factor is None:
        return entries
    return [{**e, "train": {**e.get("train", {}), "epochs": scale_epochs(e["train"]["epochs"], epoch_factor)}}
            if "epochs" in e.get("train", {}) else e for e in entries]


def dataset_setups(scale: Scale, work: Path, only: str | None) -> list[dict]:
    """Per dataset: the study keys every arm shares, the (scaled) search space, the recipes and n_trials."""
    setups = []
    if only in (None, "digits"):
        space = yaml.safe_load((REPO / "search_spaces/default.yaml").read_text())
        if scale.digits_epochs is not None:
            space["train"]["epochs"] = scale.digits_epochs
        setups.append({"dataset": "digits", "classes": 10, "space": space, "n_trials": scale.digits_trials,
                       "recipes": recipes_of("seed-recipes.yaml", None),
                       "study": {"dataset": "digits"},
                       "teacher": {"family": "resnet18", "epochs": scale.digits_teacher_epochs, "lr": 0.05},
                       "about": f"digits (1,797 8x8 images), search_spaces/default.yaml, students "
                                f"{space['train']['epochs']} epochs"})
    if only in (None, "cifar10"):
        folder = cifar_subset(REPO / "data", scale.cifar_train_per_class, scale.cifar_test_per_class)
        space = yaml.safe_load((REPO / "search_spaces/cifar10.yaml").read_text())
        space["train"]["epochs"] = scale_epochs(space["train"]["epochs"], scale.cifar_epoch_factor)
        space["train"]["batch_size"] = 64  # 512 would be a handful of steps per epoch on a subset
        setups.append({"dataset": "cifar10", "classes": 10, "space": space, "n_trials": scale.cifar_trials,
                       "recipes": recipes_of("seed-recipes-cifar10.yaml", scale.cifar_epoch_factor),
                       "study": {"dataset": f"imagefolder:{folder}"},
                       "teacher": {"family": "resnet18", "knobs": {"width": 16}, "epochs": scale.cifar_teacher_epochs,
                                   "lr": 0.05, "batch_size": 64},
                       "about": f"CIFAR-10 JPEG subset, {scale.cifar_train_per_class} train + "
                                f"{scale.cifar_test_per_class} test images per class; search_spaces/cifar10.yaml with "
                                f"epochs {space['train']['epochs']} (x{scale.cifar_epoch_factor:.3g}) and batch 64; "
                                f"teacher ResNet-18 at width 16, {scale.cifar_teacher_epochs} epochs"})
    return setups


def run_seed(setup: dict, seed: int, work: Path) -> dict:
    """Every arm and the recipes on one dataset and seed; the first arm trains the teacher the others load."""
    space_path = work / f"{setup['dataset']}-space.yaml"
    space_path.write_text(yaml.safe_dump(setup["space"], sort_keys=False))
    common = {**setup["study"], "search_space": str(space_path), "objectives": ["accuracy", "params"], "seed": seed,
              "latency_backend": "torch", "latency_runs": 5, "latency_min_seconds": 0.0,
              "executor": {"kind": "local", **({"threads_per_trial": 1} if threads_key() else {})}}
    early = early_stopping_available()
    # The arms run one after another; the order turns with the seed, so that no arm is always the first
    # (the one most exposed to whatever else the host is doing when a run starts). The first arm that runs
    # trains the teacher; the others load it.
    arms = ["b_default", "a_default_early_stopping", "c_random", "d_nsga2"]
    order = arms[seed % len(arms):] + arms[:seed % len(arms)]
    teacher = setup["teacher"]
    runs: dict[str, Any] = {}
    for arm in order:
        if arm == "a_default_early_stopping" and not early:
            runs[arm] = {"available": False, "note": "not available: the study config has no 'early_stopping' key "
                                                     "in this checkout (issue 26 item 1 not landed)"}
            continue
        keys = {k: v for k, v in ARMS[arm].items() if k != "early_stopping" or early}
        name = f"{setup['dataset']}-{arm.split('_')[0]}-s{seed}"
        rows, wall = run_study(work, name, {**common, **keys, "teacher": teacher, "n_trials": setup["n_trials"]})
        runs[arm] = {"available": True, "study": name, "settings": keys, "wall_seconds": round(wall, 1),
                     "rows": with_cumulative(rows)}
        if teacher is setup["teacher"]:  # the first arm trained it: the others load it
            teacher = {"checkpoint": str(work / "runs" / name / "teacher.pt")}
    name = f"{setup['dataset']}-recipes-s{seed}"
    # Every recipe trains to the end: a recipe is a point to place, not a proposal to judge.
    rows, wall = run_study(work, name, {**common, **({"early_stopping": False} if early else {}), "teacher": teacher,
                                        "enqueue": setup["recipes"],
                                        "n_trials": len(setup["recipes"])})
    runs["recipes"] = {"available": True, "study": name, "wall_seconds": round(wall, 1), "rows": with_cumulative(rows)}
    return analyse(runs, setup["classes"])


def reanalysed_seed(setup: dict, seed: int, folders: list[Path]) -> dict:
    """:func:`run_seed`'s analysis of one dataset and seed from studies already run into one of ``folders``."""
    runs: dict[str, Any] = {}
    for arm in [*ARMS, "recipes"]:
        name = f"{setup['dataset']}-{arm.split('_')[0]}-s{seed}"
        found = [f / "runs" / name / "study.db" for f in folders if (f / "runs" / name / "study.db").is_file()]
        if not found:
            raise SystemExit(f"no study {name} under {', '.join(map(str, folders))}: run that seed first (--keep)")
        loaded = optuna.load_study(study_name=name, storage=f"sqlite:///{found[0]}")
        runs[arm] = {"available": True, "study": name, "settings": ARMS.get(arm, {}),
                     "rows": with_cumulative(trial_rows(loaded))}
    return analyse(runs, setup["classes"])


def analyse(runs: dict[str, Any], classes: int) -> dict[str, Any]:
    """Final hypervolumes, curves over compute, compute to reach random search's final hypervolume, recipes."""
    arms = {k: v for k, v in runs.items() if k in ARMS and v["available"]}
    totals = {key: max(v["rows"][-1][key] for v in arms.values() if v["rows"]) for key in ("cum_seconds", "cum_epochs")}
    target = front_hypervolume(arms["c_random"]["rows"], classes)
    recipes = [r for r in runs["recipes"]["rows"] if r["state"] == "COMPLETE"]
    for arm, run in arms.items():
        rows = run["rows"]
        front = validation_front(rows)
        run.update({
            "final_hypervolume": front_hypervolume(rows, classes),
            "compute": {"trial_seconds": round(rows[-1]["cum_seconds"], 1) if rows else 0.0,
                        "student_epochs": rows[-1]["cum_epochs"] if rows else 0},
            "front": [{k: r[k] for k in ("trial", "student", "validation_accuracy", "test_accuracy", "params")}
                      for r in sorted(front, key=lambda r: r["params"])],
            "curve_trial_seconds": curve(rows, classes, totals["cum_seconds"], "cum_seconds"),
            "curve_student_epochs": curve(rows, classes, totals["cum_epochs"], "cum_epochs"),
            "reach_c_final": {"trial_seconds": reach(rows, classes, target, "cum_seconds"),
                              "student_epochs": reach(rows, classes, target, "cum_epochs")},
            "recipes": recipe_verdicts(front, recipes),
            "pruned": sum(r["state"] == "PRUNED" for r in rows)})
    runs["recipes"].update({
        "points": [{k: r[k] for k in ("trial", "recipe", "validation_accuracy", "test_accuracy",
                                     "params", "seconds", "epochs")} | {"point": point(r, classes)} for r in recipes],
        "hypervolume_of_recipes": front_hypervolume(runs["recipes"]["rows"], classes),
        "compute": {"trial_seconds": round(sum(r["seconds"] for r in runs["recipes"]["rows"]), 1),
                    "student_epochs": sum(r["epochs"] for r in runs["recipes"]["rows"])}})
    runs["compute_reference"] = {"trial_seconds": round(totals["cum_seconds"], 1), "student_epochs": totals["cum_epochs"]}
    runs["c_final_hypervolume"] = target
    if "a_default_early_stopping" in arms:
        runs["early_stopping_vs_b"] = stopped_front_members(arms["a_default_early_stopping"]["rows"],
                                                            arms["b_default"]["rows"])
    return runs


def stopped_front_members(with_stopping: list[dict], without: list[dict]) -> dict[str, Any]:
    """How often early stopping stopped a would-be front member: the configurations that (a) stopped and
    (b), the same search without early stopping, trained to the end, and which of those are on (b)'s
    validation front. The two arms propose the same students until (a) stops its first trial; after it
    they part, so configurations (b) never ran are counted apart."""
    finished = {r["configuration"]: r for r in without if r["state"] == "COMPLETE"}
    front = {r["configuration"] for r in validation_front(without)}
    stopped = [r for r in with_stopping if r["state"] == "PRUNED"]
    also_in_b = [r for r in stopped if r["configuration"] in finished]
    on_front = [r for r in also_in_b if r["configuration"] in front]
    return {"stopped": len(stopped), "stopped_and_finished_by_b": len(also_in_b),
            "stopped_and_on_b_front": len(on_front),
            "stopped_on_b_front": [{"trial": r["trial"], "student": r["student"],
                                    "b_test_accuracy": finished[r["configuration"]]["test_accuracy"]} for r in on_front]}


def earlier_seeds(files: list[Path], setup: dict, skip: tuple[int, ...]) -> tuple[list[dict], list[dict]]:
    """The per-seed results of ``setup``'s dataset in earlier result ``files`` (seeds in ``skip`` left out), and
    where each came from. Their setup must be this one: seeds of different sizes do not average."""
    found: dict[int, dict] = {}
    sources = []
    for path in files:
        try:
            earlier = json.loads(path.read_text())
            entry = earlier["datasets"][setup["dataset"]]
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"error: {path} holds no {setup['dataset']} result ({type(err).__name__}: {err}); "
                             "fix: pass a result file this script wrote") from None
        if entry["setup"] != setup["about"] or entry["n_trials"] != setup["n_trials"]:
            raise SystemExit(f"error: {path} ran another setup ({entry['setup']}, {entry['n_trials']} trials); fix: "
                             f"run this one with the same options ({setup['about']}, {setup['n_trials']} trials)")
        seeds = [s for s in entry["per_seed"] if s["seed"] not in skip and s["seed"] not in found]
        found.update({s["seed"]: s for s in seeds})
        if seeds:
            sources.append({"file": str(path), "seeds": [s["seed"] for s in seeds], "date": earlier.get("date"),
                            "commit": earlier.get("commit"), "loadavg_start": earlier.get("loadavg_start")})
    return list(found.values()), sources


def summary(seeds: list[dict]) -> dict[str, Any]:
    """Across seeds: mean final hypervolume and curves per arm, compute ratios to reach (c)'s final, recipes."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        done = [s[arm] for s in seeds if s[arm].get("available")]
        if not done:
            out[arm] = {"available": False}
            continue
        mean = lambda values: round(statistics.mean(values), 4)  # noqa: E731
        ratios = {key: [d["reach_c_final"][key] / s["c_random"]["compute"][name]
                        if d["reach_c_final"][key] is not None and s["c_random"]["compute"][name] else None
                        for d, s in zip(done, seeds)]
                  for key, name in (("trial_seconds", "trial_seconds"), ("student_epochs", "student_epochs"))}
        out[arm] = {
            "final_hypervolume_mean": mean([d["final_hypervolume"] for d in done]),
            "final_hypervolume_per_seed": [d["final_hypervolume"] for d in done],
            "curve_trial_seconds_mean": {f: mean([d["curve_trial_seconds"][f] for d in done])
                                         for f in done[0]["curve_trial_seconds"]},
            "curve_student_epochs_mean": {f: mean([d["curve_student_epochs"][f] for d in done])
                                          for f in done[0]["curve_student_epochs"]},
            "compute_to_reach_c_final_as_share_of_c_compute": ratios,
            "recipes_dominated": f"{sum(v['dominated'] for d in done for v in d['recipes'])} of "
                                 f"{sum(len(d['recipes']) for d in done)} (recipe x seed)",
            "recipes_not_dominated": sorted({v["recipe"] for d in done for v in d["recipes"] if not v["dominated"]}),
            "pruned_trials": sum(d["pruned"] for d in done)}
    stops = [s["early_stopping_vs_b"] for s in seeds if "early_stopping_vs_b" in s]
    if stops:
        out["early_stopping_vs_b"] = {key: sum(s[key] for s in stops) for key in
                                      ("stopped", "stopped_and_finished_by_b", "stopped_and_on_b_front")}
    return out


def headline(per_arm: dict[str, Any]) -> str:
    """One sentence: autokd's default search against random search's final hypervolume, and the recipes."""
    if not any(per_arm["c_random"]["final_hypervolume_per_seed"]):
        return ("random search's final hypervolume is 0 on every seed (no front member better than chance on test "
                "within 10M parameters): nothing to reach at this size")
    parts = []
    for arm in ("a_default_early_stopping", "b_default"):
        if not per_arm[arm].get("available", True):  # summary() marks only the missing arms
            continue
        ratios = per_arm[arm]["compute_to_reach_c_final_as_share_of_c_compute"]
        shares = {key: ", ".join("not reached" if r is None else f"{100 * r:.0f}%" for r in ratios[key])
                  for key in ("trial_seconds", "student_epochs")}
        parts.append(f"{arm} reached random search's final hypervolume at {shares['trial_seconds']} of random "
                     f"search's trial-seconds ({shares['student_epochs']} of its student epochs; target <= 50%), "
                     f"mean final hypervolume {per_arm[arm]['final_hypervolume_mean']}, recipes dominated by its "
                     f"final front {per_arm[arm]['recipes_dominated']}")
    return "; ".join(parts) + (f"; random search {per_arm['c_random']['final_hypervolume_mean']}, NSGA-II "
                               f"{per_arm['d_nsga2']['final_hypervolume_mean']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, 4 trials, short training")
    parser.add_argument("--only", choices=["digits", "cifar10"], help="one dataset only")
    parser.add_argument("--seeds", help="comma-separated study seeds (default 0,1,2; --quick: 0)")
    parser.add_argument("--n-trials", type=int, help="trials per search on every dataset (default 16 digits, 12 CIFAR)")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    parser.add_argument("--cifar-train-per-class", type=int,
                        help="CIFAR-10 training images per class (default 200; 100 halves every CIFAR trial)")
    parser.add_argument("--reanalyse", type=Path, nargs="+", metavar="DIR",
                        help="train nothing: analyse the studies kept (--keep) in these folders for --only and --seeds "
                             "(e.g. seeds run as separate processes), and write one result")
    parser.add_argument("--out", help="result name under bench/results/ (default search_efficiency[-quick]; "
                                      "e.g. one per dataset when two runs share the host)")
    parser.add_argument("--with-seeds-from", type=Path, nargs="+", metavar="JSON", default=[],
                        help="add the per-seed results of these earlier result files (seeds not run now, same "
                             "dataset) before summarising: seeds run on different days or hosts in one result")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    if args.seeds:
        scale = replace(scale, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.n_trials:
        scale = replace(scale, digits_trials=args.n_trials, cifar_trials=args.n_trials)
    if args.cifar_train_per_class:
        scale = replace(scale, cifar_train_per_class=args.cifar_train_per_class)
    torch.set_num_threads(1)
    load_start, started = os.getloadavg(), time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="autokd-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "scale": scale.name, "seeds": list(scale.seeds), "work": str(work),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
        "objectives": "the studies optimise [accuracy (validation, max), params (min)]; hypervolume scores the "
                      "validation-chosen front on test",
        "hypervolume_axes": {"x": "normalised test error (1 - test accuracy) / (1 - 1/classes): 0 perfect, 1 chance",
                             "y": f"(log10(params) - {LOG_PARAMS[0]:g}) / {LOG_PARAMS[1] - LOG_PARAMS[0]:g}, clipped "
                                  "to [0, 1]: 0 = 1k params, 1 = 10M"},
        "reference_point": list(REFERENCE), "compute_fractions": list(FRACTIONS),
        "executor": "local, one torch thread, trials one at a time (deterministic for a seed; fits 2 cores)",
        "early_stopping_available": early_stopping_available(), "datasets": {}}
    for setup in dataset_setups(scale, work, args.only):
        per_seed = [{**(reanalysed_seed(setup, seed, args.reanalyse) if args.reanalyse
                        else run_seed(setup, seed, work)), "seed": seed} for seed in scale.seeds]
        earlier, sources = earlier_seeds(args.with_seeds_from, setup, skip=scale.seeds)
        per_seed = sorted(per_seed + earlier, key=lambda s: s["seed"])
        per_arm = summary(per_seed)
        result["datasets"][setup["dataset"]] = {
            "setup": setup["about"], "n_trials": setup["n_trials"], "recipes": len(setup["recipes"]),
            "headline": headline(per_arm), "summary": per_arm, "per_seed": per_seed,
            **({"seeds_from_earlier_results": sources} if sources else {})}
        print(setup["dataset"], result["datasets"][setup["dataset"]]["headline"], flush=True)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.reanalyse:
        result["reanalysed_from"] = [str(f) for f in args.reanalyse]
        result["wall_seconds_note"] = "wall_seconds and loadavg_* are the analysis's own; the studies ran earlier"
    result["loadavg_start"] = [round(x, 2) for x in load_start]
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["note"] = ("trial-seconds depend on the host's load (see loadavg_start/end): compare arms within one "
                      "file; student epochs do not. Accuracies, fronts and hypervolumes are the same for a seed on "
                      "one processor whatever the load. NSGA-II's first population is random proposals seeded as random "
                      "search's are (autokd.search.study.sampler_seed), so the first trials of (c) and (d) are the same "
                      "students. TPE's start-up trials (max(4, min(10, n_trials // 3))) are spread over the cost axis "
                      "(startup: spread, autokd.search.startup): each the cheapest, then the farthest in log params, of "
                      "32 random configurations drawn with that seed.")
    print(write_result(args.out or "search_efficiency" + ("-quick" if args.quick else ""), result, CPU))


if __name__ == "__main__":
    main()
