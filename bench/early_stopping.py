"""How often cost-aware early stopping would stop a trial that ends on the front, and what it saves.

Each study runs to the end with early stopping off (``autokd search --no-early-stopping``, local
executor: one trial at a time), every trial's validation curve stored. The rule
(:func:`autokd.early_stop.replay`) is then applied offline to those curves, trial after trial as
the local executor would meet them (each judged against the earlier trials it let finish), and we
count the members of the final front (validation Pareto front of the full study) it would have
stopped, and the student epochs it would have saved. The chosen rule and a small grid around it
are replayed on the same curves.

Studies: the built-in digits study (default search space, 16 trials) and a CIFAR-10 subset from
../shared/data (the first 200 training and 50 test images of each class, at 16 px, the same space,
12 trials), over seeds; both with a small cnn5 teacher (6 epochs) to fit a 2-core machine.
``--families cnn5,resnet,vgg`` leaves mobilenetv2 out of the space (minutes per trial on a loaded
2-core machine). Replaying is offline: a live study with early stopping would sample later trials from a
history with PRUNED trials in it, so its front may differ a little from the replayed one.

    python -m bench.early_stopping                      # runs the studies, writes bench/results/early_stopping.json
    python -m bench.early_stopping --seeds 0 --families cnn5,resnet,vgg   # what fits a loaded 2-core machine
    python -m bench.early_stopping --replay-only        # re-applies the rules to the curves stored there
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml

from autokd.config import StudyConfig, TrialConfig, load_study_config
from autokd.early_stop import COST_OBJECTIVES, EarlyStopRule, Finished, replay
from autokd.record import trial_accuracy, trial_config, trial_curve, trial_figures, trial_kind
from autokd.report import pareto_trials
from autokd.search.study import open_study
from autokd.trial import costs_are_final
from bench.common import RESULTS, autokd_cli, cifar10_subset, write_result

REPO = Path(__file__).resolve().parents[1]
TEACHER = {"family": "cnn5", "knobs": {"width": 1.0}, "epochs": 6, "lr": 0.05}
GRID = [EarlyStopRule(margin=m, first_fraction=f, min_finished=n)
        for m in (0.02, 0.05, 0.10) for f in (0.25, 0.34, 0.5) for n in (2, 3, 5)]


def study_files(folder: Path, seeds: list[int], cifar_trials: int, digits_trials: int,
                families: list[str], datasets: list[str], timeout: float | None = None) -> list[Path]:
    """The study YAMLs to run: digits (built-in study, local) and a CIFAR-10 subset, one per seed, over the
    default search space's ``families``."""
    paths = []
    cifar10 = cifar10_subset(folder / "cifar10", {"train": 200, "test": 50}) if "cifar" in datasets else None
    default = yaml.safe_load((REPO / "search_spaces/default.yaml").read_text())
    default["students"] = {k: v for k, v in default["students"].items() if k in families}
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(default))
    for seed in seeds:
        digits = StudyConfig().model_dump(mode="json") | {
            "name": f"es-digits-s{seed}", "seed": seed, "n_trials": digits_trials, "output": str(folder / f"digits-s{seed}"),
            "search_space": str(space), "base_dir": str(REPO), "timeout": timeout}
        digits["executor"]["kind"] = "local"
        digits["teacher"] = TEACHER  # a small teacher: the rule reads the students' curves, not the teacher's
        cifar = dict(digits, name=f"es-cifar-s{seed}", dataset=f"imagefolder:{cifar10}", image_size=16,
                     n_trials=cifar_trials, output=str(folder / f"cifar-s{seed}"))
        for study in [s for s, name in ((digits, "digits"), (cifar, "cifar")) if name in datasets]:
            path = folder / f"{study['name']}.yaml"
            path.write_text(yaml.safe_dump(study))
            paths.append(path)
    return paths


def curves_of(path: Path) -> dict:
    """The finished study's trials as the rule sees them, in the order they ran, and its front."""
    cfg = load_study_config(path)
    study = open_study(cfg, create=False)
    directions = {o: d for o, d in zip(cfg.objectives, cfg.directions) if o in COST_OBJECTIVES}
    front = {t.number for t in pareto_trials(study)}
    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        figures = trial_figures(t)
        if t.state.name != "COMPLETE" or not trial_curve(t) or trial_kind(figures) in ("pair", "cascade"):
            continue
        config = TrialConfig.from_params(trial_config(t))
        trials.append({"number": t.number, "costs": {k: float(figures[k]) for k in directions},
                       "curve": trial_curve(t), "final": trial_accuracy(t), "epochs": config.train.epochs,
                       "judged": costs_are_final(config), "on_front": t.number in front,
                       "seconds": figures.get("trial_seconds")})
    return {"study": cfg.name, "directions": directions, "trials": trials}


def apply(rule: EarlyStopRule, studies: list[dict]) -> dict:
    """The rule replayed on every study: front members it stops, trials it stops, epochs it saves."""
    front = stopped_front = stopped = saved = epochs = 0
    cases = []
    for s in studies:
        done = [Finished(t["number"], t["costs"], t["curve"], t["final"]) for t in s["trials"]]
        judged = {t["number"] for t in s["trials"] if t["judged"]}
        outcome = replay(done, {t["number"]: t["epochs"] for t in s["trials"]}, s["directions"], rule)
        outcome = {n: v for n, v in outcome.items() if n in judged}
        for t in s["trials"]:
            front += t["on_front"]
            epochs += t["epochs"]
            if t["number"] in outcome:
                at, reason = outcome[t["number"]]
                stopped += 1
                saved += t["epochs"] - at
                stopped_front += t["on_front"]
                cases.append({"study": s["study"], "trial": t["number"], "epoch": at, "on_front": t["on_front"],
                              "final": t["final"], "reason": reason})
    return {"rule": vars(rule), "front_members": front, "front_members_stopped": stopped_front,
            "trials": sum(len(s["trials"]) for s in studies), "trials_stopped": stopped,
            "student_epochs": epochs, "student_epochs_saved": saved,
            "share_of_epochs_saved": round(saved / epochs, 3) if epochs else 0.0, "stopped": cases}


def write(studies: list[dict], run_seconds: dict, load_start: tuple, started: float, options: dict
          ) -> tuple[Path, dict]:
    """Replay the default rule and the grid on ``studies``; write bench/results/early_stopping.json."""
    chosen = apply(EarlyStopRule(), studies)
    grid = [{k: v for k, v in apply(r, studies).items() if k != "stopped"} for r in GRID]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    path = write_result("early_stopping", {
        "commit": commit, "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "seconds": round(time.perf_counter() - started, 1),
        "options": options, "run_seconds": run_seconds, "default_rule": chosen, "grid": grid, "studies": studies}, torch.device("cpu"))
    return path, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--digits-trials", type=int, default=16)
    parser.add_argument("--cifar-trials", type=int, default=12)
    parser.add_argument("--families", default="cnn5,resnet,vgg,mobilenetv2",
                        help="Families of the default search space to keep (all four: the full space).")
    parser.add_argument("--datasets", default="digits,cifar")
    parser.add_argument("--study-timeout", type=float, default=None,
                        help="Stop starting trials of a study after this many seconds (the budget's trials otherwise).")
    parser.add_argument("--replay-only", action="store_true", help="Re-apply the rules to the stored curves.")
    parser.add_argument("--extend", action="store_true", help="Add these studies to the ones stored.")
    args = parser.parse_args()
    out = RESULTS / "early_stopping.json"
    load_start = os.getloadavg()
    started = time.perf_counter()
    options = {k: getattr(args, k) for k in ("seeds", "families", "datasets", "digits_trials", "cifar_trials",
                                        "study_timeout")}
    if args.replay_only:
        previous = json.loads(out.read_text())
        studies, run_seconds, options = previous["studies"], previous["run_seconds"], previous.get("options", options)
    else:
        studies, run_seconds = [], {}
        if args.extend:
            previous = json.loads(out.read_text())
            studies, run_seconds = previous["studies"], previous["run_seconds"]
            options = {"runs": [previous.get("options", {}), options]}
        with tempfile.TemporaryDirectory(prefix="autokd-es-") as tmp:
            for path in study_files(Path(tmp), [int(s) for s in args.seeds.split(",")], args.cifar_trials,
                                    args.digits_trials, args.families.split(","), args.datasets.split(","),
                                    args.study_timeout):
                seconds, _ = autokd_cli(REPO, Path(tmp), "search", str(path), "--no-early-stopping", timeout=3600)
                run_seconds[path.stem] = round(seconds, 1)
                studies.append(curves_of(path))
                print(f"{path.stem}: {seconds:.0f} s, {len(studies[-1]['trials'])} trials", flush=True)
                write(studies, run_seconds, load_start, started, options)  # a stopped run keeps the studies it finished
    path, chosen = write(studies, run_seconds, load_start, started, options)
    print(f"default rule {vars(EarlyStopRule())}: stopped {chosen['front_members_stopped']} of "
          f"{chosen['front_members']} front members, {chosen['trials_stopped']} of {chosen['trials']} trials, "
          f"saved {chosen['share_of_epochs_saved']:.0%} of student epochs -> {path}")


if __name__ == "__main__":
    main()
