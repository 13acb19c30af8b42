"""Committees that pay? The digits and CIFAR-10 pair studies, run through `autokd search`, judged on test.

Runs `studies/digits-pairs.yaml` and `studies/cifar10-pairs.yaml` (the CIFAR-10 JPEG copy in
../shared/data, the study's own 8,000 / 2,000 subset) as a user would, then reads every complete
trial and checks the issue-12 targets on the test split:

- the front of test accuracy against MACs per input (all complete trials) holds a committee whose
  test accuracy is at or above its best member's;
- a cascade reaches its large member's test accuracy (within 0.3 points) at no more than 0.6x its MACs;
- a routed pair beats its best member by at least 1 point at no more than the large member's MACs.

Where a target is missed, the JSON has the closest committee, the oracle's headroom and the
router's accuracy on disagreements. CPU, one torch thread per trial (the studies' local executor).

    python -m bench.committees                       # both studies, ~35 min on 2 cores
    python -m bench.committees --only digits         # ~5 min
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState

from autokd.record import trial_figures, trial_kind
from bench.common import autokd_cli, cifar10_folder, write_result

REPO = Path(__file__).resolve().parents[1]
STUDIES = {"digits": "studies/digits-pairs.yaml", "cifar10": "studies/cifar10-pairs.yaml"}


def test_front(trials: list[Any]) -> list[Any]:
    """Trials no other trial beats on test accuracy and MACs per input at once."""
    def point(t: Any) -> tuple[float, float]:
        a = trial_figures(t)
        return a["test_accuracy"], float(a.get("test_macs", a["macs"]))

    front = []
    for t in trials:
        acc, macs = point(t)
        if not any((o_acc >= acc and o_macs <= macs) and (o_acc > acc or o_macs < macs)
                   for o_acc, o_macs in map(point, trials)):
            front.append(t)
    return front


def committee_row(t: Any, front: set[int]) -> dict[str, Any]:
    a = trial_figures(t)
    members_test, members_macs = a["member_test_accuracy"], a["member_macs"]
    macs = float(a.get("test_macs", a["macs"]))
    return {
        "trial": t.number, "kind": trial_kind(a), "members": a["members"], "member_names": a["member_names"],
        "router": a.get("router"), "on_test_front": t.number in front,
        "validation_accuracy": a["validation_accuracy"], "test_accuracy": a["test_accuracy"],
        "member_test_accuracy": members_test, "test_oracle_accuracy": a["test_oracle_accuracy"],
        "test_router_accuracy_on_disagreements": a.get("test_router_accuracy"),
        "test_routing_share": a["test_routing_share"], "macs_per_input_test": macs, "member_macs": members_macs,
        "gain_over_best_member_points": 100 * (a["test_accuracy"] - max(members_test)),
        "gain_over_large_member_points": 100 * (a["test_accuracy"] - members_test[1]),
        "macs_over_large_member": macs / members_macs[1],
        "oracle_headroom_points": 100 * (a["test_oracle_accuracy"] - max(members_test)),
        "latency_ms": a.get("latency_ms"),
    }


def judge(study: optuna.Study) -> dict[str, Any]:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    front = {t.number for t in test_front(complete)}
    committees = [committee_row(t, front) for t in complete if trial_kind(trial_figures(t)) != "single"]
    cascades = [c for c in committees if c["kind"] == "cascade"]
    pairs = [c for c in committees if c["kind"] == "pair"]
    paying = [c for c in committees if c["on_test_front"] and c["gain_over_best_member_points"] >= 0]
    cascade_hits = [c for c in cascades if c["gain_over_large_member_points"] >= -0.3 and c["macs_over_large_member"] <= 0.6]
    pair_hits = [c for c in pairs if c["gain_over_best_member_points"] >= 1.0 and c["macs_over_large_member"] <= 1.0]
    within_cost = [c for c in pairs if c["macs_over_large_member"] <= 1.0]
    return {
        "trials_complete": len(complete),
        "singles": len(complete) - len(committees), "cascades": len(cascades), "pairs": len(pairs),
        "test_front": sorted(front),
        "target_committee_on_front_at_or_above_best_member": {"met": bool(paying), "committees": [c["trial"] for c in paying]},
        "target_cascade_matches_large_at_0.6x_macs": {
            "met": bool(cascade_hits), "committees": [c["trial"] for c in cascade_hits],
            "closest": min(cascades, key=lambda c: max(0.0, -0.3 - c["gain_over_large_member_points"]) * 10
                           + max(0.0, c["macs_over_large_member"] - 0.6), default=None)},
        "target_pair_beats_best_member_by_1pt": {
            "met": bool(pair_hits), "committees": [c["trial"] for c in pair_hits],
            "closest": max(within_cost, key=lambda c: c["gain_over_best_member_points"], default=None)},
        "committees": committees,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(STUDIES), help="run one study")
    parser.add_argument("--out", type=Path, default=Path("/tmp/autokd-bench-committees"))
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for name, study_file in STUDIES.items():
        if args.only and name != args.only:
            continue
        output = args.out / name
        shutil.rmtree(output, ignore_errors=True)
        extra = ["--dataset", f"imagefolder:{cifar10_folder()}"] if name == "cifar10" else []
        seconds, log = autokd_cli(REPO, REPO, "search", study_file, "--output", str(output), *extra, timeout=3600)
        study_name = yaml.safe_load((REPO / study_file).read_text())["name"]
        study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{output / 'study.db'}")
        results[name] = {"study": study_file, "search_seconds": seconds, **judge(study)}
        print(f"{name}: {results[name]['trials_complete']} trials in {seconds / 60:.1f} min; targets: "
              + ", ".join(f"{k}={v['met']}" for k, v in results[name].items() if k.startswith("target")), flush=True)
    path = write_result("committees" if not args.only else f"committees_{args.only}",
                        {"date_run": time.strftime("%Y-%m-%d"), "results": results}, torch.device("cpu"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
