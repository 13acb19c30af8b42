"""Committees (cascades and routed pairs): routing learned on validation, on digits and constructed data."""

from __future__ import annotations

import os
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autokd.committee import Cascade, RoutedPair, SelectorSpec, build_selector, committee_outputs, \
    selector_scores, train_selector
from autokd.config import ReusedMembers, RouterKnobs, SelectorKnobs, StudentSpec, TrialConfig, load_study_config
from autokd.errors import AutokdError
from autokd.export import exported_outputs, export_model, load_trial_model
from autokd.models import describe
from autokd.record import trial_figures, trial_kind
from autokd.routing import choose_threshold, committee_cost, defer_score, out_of_fold, selector_targets
from autokd.space import SearchSpace
from autokd.train import AugmentPolicy, predict
from tests.tiny import TEST_SEED, TINY_SPACE, write_tiny_study

COMMITTEE_SPACE = {
    **TINY_SPACE,
    "students": {"cnn5": {"width": {"float": [0.125, 0.25], "log": True}, "hidden": 16},
                 "vgg": {"variant": 7, "width": 0.0625}},
    "pairs": {"kind": {"choices": ["single", "pair", "cascade"]}, "reuse": {"choices": [False, True]}, "pool": 4,
              "layers": {"int": [2, 3]}, "width": {"int": [4, 8]}, "epochs": 2,
              "rule": {"choices": ["max_softmax", "margin"]}, "combine": {"choices": ["larger", "average"]},
              "target": {"choices": ["match", "budget"]}, "tolerance": {"float": [0.0, 1.0]},
              "budget": {"float": [0.2, 0.8]}},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU extra threads cost a lot."""
    old = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("AUTOKD_TEST_THREADS", 1)))  # docs/testing.md
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------- pure routing rules


def test_threshold_meets_the_accuracy_target_at_least_cost():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    kept = torch.tensor([0, 0, 1, 1, 1, 1]).bool()  # the cheap member fails on its two most doubtful inputs
    deferred = torch.tensor([1, 1, 1, 1, 0, 1]).bool()  # the large member: 5 of 6
    just = choose_threshold(scores, kept, deferred, reference=5 / 6, target="match")
    assert just.defer_share == pytest.approx(1 / 6) and just.accuracy == pytest.approx(5 / 6)  # the cheapest that matches
    match = choose_threshold(scores, kept, deferred, reference=1.0, target="match", fixed=1.0, defer=4.0)
    assert match.defer_share == pytest.approx(2 / 6) and match.accuracy == pytest.approx(1.0)
    assert 0.7 < match.threshold < 0.8 and match.cost == pytest.approx(committee_cost(2 / 6, fixed=1.0, keep=0.0,
                                                                                      defer=4.0))
    # a 20-point tolerance lets it keep everything (4/6 >= 5/6 - 0.2)
    loose = choose_threshold(scores, kept, deferred, reference=5 / 6, target="match", tolerance=20.0)
    assert loose.defer_share == 0.0 and loose.threshold == float("inf")
    budget = choose_threshold(scores, kept, deferred, reference=5 / 6, target="budget", budget=1 / 6)
    assert budget.defer_share == pytest.approx(1 / 6) and budget.accuracy == pytest.approx(5 / 6)


def test_threshold_never_splits_tied_scores():
    scores = torch.tensor([0.5, 0.5, 0.5, 0.1])
    kept, deferred = torch.tensor([0, 1, 1, 1]).bool(), torch.ones(4, dtype=torch.bool)
    choice = choose_threshold(scores, kept, deferred, reference=1.0)
    assert choice.defer_share in (0.0, 0.75, 1.0)  # the three tied inputs go together
    assert ((scores > choice.threshold).float().mean()) == pytest.approx(choice.defer_share)


def test_confidence_rules_and_cost_aware_targets():
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert defer_score(logits, "max_softmax")[0] < defer_score(logits, "max_softmax")[1]
    assert defer_score(logits, "margin")[1] == pytest.approx(1.0)  # a tie between the top two: full doubt
    with pytest.raises(ValueError, match="confidence rule"):
        defer_score(logits, "entropy")
    cheap = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])  # right, wrong, right, wrong
    large = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])  # right, right, wrong, wrong
    target, weight = selector_targets(cheap, large, torch.zeros(4, dtype=torch.long))
    assert target.tolist() == [0.0, 1.0, 0.0, 0.0]  # both right: the cheap member
    assert weight.tolist() == [1.0, 1.0, 1.0, 0.0]  # neither right: no lesson


def test_out_of_fold_decisions_never_see_their_own_inputs():
    seen: list[set[int]] = []

    def fit(index: torch.Tensor) -> set[int]:
        seen.append(set(index.tolist()))
        return seen[-1]

    decisions = out_of_fold(10, 3, seed=0, fit=fit, decide=lambda fitted, index: torch.tensor(
        [i in fitted for i in index.tolist()]))
    assert not decisions.any() and len(seen) == 3
    assert set().union(*seen) == set(range(10))


# --------------------------------------------------------------------------- constructed members


class _ReadsRow(nn.Module):
    """A 'student' that reads the class one-hot from one image row (pixels row, 0..3); counts the rows it sees."""

    def __init__(self, row: int):
        super().__init__()
        self.row, self.rows_seen = row, 0

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.rows_seen += len(x01)
        return x01[:, 0, self.row, :4] * 10.0  # (B, 4)


def _separable(n: int, share_first: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group A (top rows bright): row 7 holds the true one-hot, row 6 a wrong one; group B the reverse."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    group_a = torch.rand(n, generator=gen) < share_first
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    images[group_a, :, :5] = 255
    wrong = (labels + 1) % 4
    rows = torch.arange(n)
    images[rows, 0, torch.where(group_a, 7, 6), labels] = 255
    images[rows, 0, torch.where(group_a, 6, 7), wrong] = 255
    return images, labels


def test_selector_learns_separable_routing_from_held_out_images(figure):
    held_out_x, held_out_y = _separable(400, 0.6, seed=2 * TEST_SEED)
    test_x, test_y = _separable(300, 0.6, seed=2 * TEST_SEED + 1)
    cheap, large = _ReadsRow(7), _ReadsRow(6)  # right exactly on group A / group B
    spec = SelectorSpec(layers=2, width=8, epochs=10, lr=0.01, batch_size=64, seed=TEST_SEED)
    selector = build_selector(spec, in_channels=1, image_size=8, mean=(0.5,), std=(0.5,))
    history = train_selector(selector, cheap, large, held_out_x, held_out_y, spec=spec, policy=AugmentPolicy())
    assert history[-1]["needs_large"] == pytest.approx(float((held_out_x[:, 0, 0, 0] == 0).float().mean()), abs=0.01)
    scores = selector_scores(selector, held_out_x)
    threshold = choose_threshold(scores, predict(cheap, held_out_x).argmax(1) == held_out_y,
                                 predict(large, held_out_x).argmax(1) == held_out_y, reference=0.4, target="budget",
                                 budget=1.0).threshold
    pair = RoutedPair(cheap, large, selector, threshold=threshold, num_classes=4).eval()
    cheap.rows_seen = large.rows_seen = 0
    answer, deferred = committee_outputs(pair, test_x)
    assert figure("test accuracy", float((answer.argmax(1) == test_y).float().mean())) >= 0.97  # near the oracle (100%); members 60% / 40%
    assert cheap.rows_seen == int((~deferred).sum()) and large.rows_seen == int(deferred.sum())  # one member per input


def test_cascade_defers_only_doubtful_rows_and_runs_the_large_member_on_them_alone():
    x = torch.rand(6, 1, 8, 8)
    cheap, large = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), _ReadsRow(6)
    torch.manual_seed(0)
    cascade = Cascade(cheap, large, rule="max_softmax", combine="larger", threshold=0.5).eval()
    with torch.no_grad():
        doubt = defer_score(cheap(x), "max_softmax")
        cascade.threshold.fill_(float(doubt.median()))
        answer, deferred = cascade.forward_with_route(x)
    assert torch.equal(deferred, doubt > doubt.median())
    assert large.rows_seen == int(deferred.sum()) > 0
    kept = ~deferred
    assert torch.allclose(answer[kept], torch.log_softmax(cheap(x)[kept], 1), atol=1e-6)


# --------------------------------------------------------------------------- a digits study


@pytest.fixture(scope="module")
def committee_study(tmp_path_factory):
    """Two singles, then a reuse cascade, a reuse pair and a cascade that trains its own members."""
    from autokd.context import build_context
    from autokd.deployed import measure_model
    from autokd.search.local import run_local
    from autokd.search.study import open_study

    folder = tmp_path_factory.mktemp("committees")
    path = write_tiny_study(folder, name="committees", space=COMMITTEE_SPACE, n_trials=5,
                            teacher={"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 2, "lr": 0.05},
                            objectives=["accuracy", "macs", "latency_ms"], sampler="random", validation_fraction=0.25)
    cfg = load_study_config(path)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    study = open_study(cfg, heartbeat=False)
    context = build_context(cfg, show_progress=False)
    teacher_figures = measure_model(context.teacher, context.validation, context.test, context.data.num_classes,
                                    latency=context.latency, device=context.device)
    study.set_user_attr("teacher", {**context.teacher_summary, **teacher_figures,
                                    "architecture": "cnn5"})
    for params in ({"kind": "single", "family": "cnn5"}, {"kind": "single", "family": "vgg"},  # unequal MACs
                   # both orders of the two singles: one committee names its large member first
                   {"kind": "cascade", "pair.reuse": True, "router.combine": "average", "pair.first": 0,
                    "pair.second": 0},
                   {"kind": "pair", "pair.reuse": True, "pair.first": 1, "pair.second": 0},
                   {"kind": "cascade", "pair.reuse": False}):
        study.enqueue_trial(params)
    run_local(study, cfg, space, context)
    return cfg, study, context


def _committees(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs["kind"] in ("pair", "cascade")]


def test_committee_trials_record_members_routing_and_costs(committee_study):
    cfg, study, context = committee_study
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    committees = _committees(study)
    assert sorted(t.user_attrs["kind"] for t in committees) == ["cascade", "cascade", "pair"]
    for t in committees:
        a = trial_figures(t)
        for key in ("members", "member_test_accuracy", "member_validation_accuracy", "test_accuracy",
                    "validation_accuracy", "macs", "routing_share", "router_accuracy", "oracle_accuracy",
                    "test_routing_share", "latency_ms", "size_bytes"):
            assert key in a, key
        assert a["oracle_accuracy"] >= max(a["member_validation_accuracy"]) - 1e-6
        assert sum(a["routing_share"]) == pytest.approx(1.0)
        assert a["member_macs"][0] <= a["member_macs"][1]  # the cheap member first
        fixed, keep = ((a["member_macs"][0], 0) if a["kind"] == "cascade" else (a["selector_macs"], a["member_macs"][0]))
        assert a["macs"] == round(committee_cost(a["routing_share"][1], fixed=fixed, keep=keep, defer=a["member_macs"][1]))
        assert t.values == [a["accuracy"], a["macs"], a["latency_ms"]]
    reused = [t for t in committees if trial_figures(t).get("reused_from")]
    assert len(reused) == 2
    assert len({tuple(t.user_attrs["config"][f"selector.from_trial{i}"] for i in (1, 2)) for t in reused}) == 2
    for t in reused:  # a reused member's figures are exactly its own trial's, cheap member first
        a = trial_figures(t)
        assert a["reused_from"] == a["members"]
        own = {n: study.trials[n].user_attrs for n in a["members"]}
        assert a["member_test_accuracy"] == pytest.approx([own[n]["test_accuracy"] for n in a["members"]], abs=1e-6)
        assert a["member_macs"] == [own[n]["macs"] for n in a["members"]]
        assert a["member_names"] == [describe(own[n]["architecture"]) for n in a["members"]]
        rebuilt = TrialConfig.from_params(t.user_attrs["config"])  # the stored config alone rebuilds it
        assert rebuilt.kind in ("pair", "cascade") and sorted(rebuilt.reuse.weights) == sorted(
            own[n]["weights_path"] for n in a["members"])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_committee_exports_reproduce_recorded_accuracy_and_routing(committee_study, tmp_path, fmt):
    _, study, context = committee_study
    for t in _committees(study)[:2]:
        model, payload = load_trial_model(Path(t.user_attrs["weights_path"]))
        assert isinstance(model, (Cascade, RoutedPair)) and payload["kind"] == t.user_attrs["kind"]
        path = export_model(model, fmt, tmp_path / f"t{t.number}.{fmt}", context.data.test_images[:1].float() / 255)
        predicted, deferred = exported_outputs(path, fmt, context.data.test_images)
        accuracy = float((predicted == context.data.test_labels).float().mean())
        assert accuracy == pytest.approx(t.user_attrs["test_accuracy"], abs=1e-6)
        assert float(deferred.float().mean()) == pytest.approx(trial_figures(t)["test_routing_share"][1], abs=1e-6)


def test_report_puts_committees_beside_members_and_warns(committee_study):
    from autokd.report import committee_warnings, print_report

    cfg, study, _ = committee_study
    console = Console(record=True, width=220)
    print_report(study, cfg, console)
    text = console.export_text()
    assert "Committees" in text and "oracle" in text and "best single" in text
    lines = text.splitlines()
    for t in _committees(study):  # each member row, under its committee's row, names the trial it came from
        members = trial_figures(t)["members"]
        if all(isinstance(n, int) for n in members):
            row = next(i for i, line in enumerate(lines) if re.match(rf"│\s+{t.number}\*?\s+│\s+(cascade|routed)", line))
            block = "\n".join(lines[row:row + 5])
            for role, n in zip(("cheap", "large"), members):
                name = describe(study.trials[n].user_attrs["architecture"])
                assert f"{role} member {name} (trial {n})" in block, (t.number, role, n, block)
    warnings = committee_warnings(study)
    for t in _committees(study):
        a = trial_figures(t)
        degenerate = max(a["test_routing_share"]) > 0.95
        worse = a["test_accuracy"] < max(a["member_test_accuracy"]) - 1e-9
        assert any(f"trial {t.number}" in w for w in warnings) == (degenerate or worse)


def test_committee_config_round_trips_and_is_validated():
    cfg = TrialConfig(student=StudentSpec.of("cnn5", width=0.25), second=StudentSpec.of("vgg", width=0.0625),
                      kind="cascade", router=RouterKnobs(rule="margin", combine="average", target="match",
                                                         tolerance=0.5))
    assert TrialConfig.from_params(cfg.to_params()) == cfg
    assert cfg.to_params()["router.rule"] == "margin"
    space = SearchSpace(COMMITTEE_SPACE)
    cascade = space.suggest(optuna.trial.FixedTrial({"kind": "cascade", "pair.reuse": False, "family": "cnn5",
                                                     "cnn5.width": 0.2, "family2": "vgg", "router.rule": "margin",
                                                     "router.combine": "larger", "router.target": "budget",
                                                     "router.budget": 0.3, "loss": "none"}))
    assert cascade.kind == "cascade" and cascade.router == RouterKnobs(rule="margin", combine="larger", target="budget",
                                                                       budget=0.3)
    assert cascade.selector == SelectorKnobs() and cascade.reuse is None
    stored = {"kind": "pair", "family": "cnn5", "cnn5.width": 0.25, "family2": "vgg", "second.vgg.width": 0.0625,
              "router.budget": 0.4, "router.target": "budget", "selector.family": "separable",
              "selector.from_trial1": 3, "selector.from_trial2": 0, "selector.from_weights1": "a.pt",
              "selector.from_weights2": "b.pt", "selector.layers": 2}  # a reuse pair's params as a study stores them
    pair = TrialConfig.from_params(stored)
    assert (pair.router, pair.selector, pair.reuse) == (
        RouterKnobs(target="budget", budget=0.4), SelectorKnobs(layers=2, family="separable"),
        ReusedMembers(trials=(3, 0), weights=("a.pt", "b.pt")))
    committee_params = {k: v for k, v in pair.to_params().items() if k.startswith(("router.", "selector."))}
    assert committee_params == {k: v for k, v in stored.items() if k.startswith(("router.", "selector."))}
    with pytest.raises(AutokdError, match="selector.bogus|'bogus'"):
        TrialConfig.from_params({**stored, "selector.bogus": 1})
    with pytest.raises(AutokdError, match="trial kind"):
        SearchSpace({**COMMITTEE_SPACE, "pairs": {"kind": "triple"}})
    with pytest.raises(AutokdError, match="pairs.budget"):
        SearchSpace({**COMMITTEE_SPACE, "pairs": {"budget": 1.5}})
    with pytest.raises(AutokdError, match="pairs.bogus"):
        SearchSpace({**COMMITTEE_SPACE, "pairs": {"bogus": 1}})


def test_reuse_only_committees_wait_for_two_singles(tmp_path):
    """With committees that only reuse, proposals are singles until two are finished or coming."""
    from autokd.search.study import open_study, propose

    space_spec = {**COMMITTEE_SPACE, "pairs": {**COMMITTEE_SPACE["pairs"], "reuse": True}}
    cfg = load_study_config(write_tiny_study(tmp_path, name="singles-first", space=space_spec, n_trials=20,
                                             sampler="random"))
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    assert space.singles_first and not SearchSpace(COMMITTEE_SPACE).singles_first  # reuse searched: no rule
    study = open_study(cfg, heartbeat=False)
    first, _ = propose(study, cfg, space)
    second, _ = propose(study, cfg, space)
    assert [first.params["kind"], second.params["kind"]] == ["single", "single"]
    study.tell(first, state=TrialState.FAIL)  # a failed single is replaced by another
    third, _ = propose(study, cfg, space)
    assert third.params["kind"] == "single"
    later = [propose(study, cfg, space)[0].params["kind"] for _ in range(8)]  # two singles coming: the sampler's
    assert set(later) - {"single"}, later


@pytest.mark.slow
def test_committee_trials_through_ray_executor(committee_study):
    """Two more trials of the same study on Ray: a cascade and a reuse pair."""
    pytest.importorskip("ray")
    from autokd.search.ray_executor import run_ray

    cfg, study, _ = committee_study
    ray_cfg = cfg.with_overrides(n_trials=7, executor="ray", max_concurrent=1)
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    study.enqueue_trial({"kind": "cascade", "pair.reuse": True})
    study.enqueue_trial({"kind": "pair", "pair.reuse": True})
    run_ray(study, ray_cfg, space, console=Console(quiet=True))
    new = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.number >= 5]
    assert sorted(t.user_attrs["kind"] for t in new) == ["cascade", "pair"]
    assert all(0.0 < t.user_attrs["accuracy"] <= trial_figures(t)["oracle_accuracy"] + 1e-6 for t in new)


def test_fixed_member_families_and_the_published_selector_size():
    from autokd.measure import count_params

    space = SearchSpace.load(Path(__file__).resolve().parents[1] / "search_spaces" / "paper-selector-pair.yaml")
    cfg = space.suggest(optuna.trial.FixedTrial({}))
    assert (cfg.kind, cfg.student.family, cfg.second.family) == ("pair", "densenet121", "googlenet")
    assert "family" not in space.dimensions()  # what `autokd check` counts: fixed families are not searched
    mixed = SearchSpace({**COMMITTEE_SPACE, "pairs": {"kind": {"choices": ["single", "pair"]}, "members": ["cnn5", "vgg"]}})
    assert "family" in mixed.dimensions()  # a single still samples its family
    selector = build_selector(SelectorSpec.from_config(cfg), in_channels=3, image_size=32, mean=(0.5,) * 3,
                              std=(0.5,) * 3)
    assert 0.5e6 < count_params(selector) <= 0.55e6  # the published selector: 0.55M
    with pytest.raises(AutokdError, match="pairs.members"):
        SearchSpace({**COMMITTEE_SPACE, "pairs": {"kind": "pair", "members": ["cnn5", "resnet"]}})


def test_a_re_timing_leaves_the_fronts_committees_out_and_says_so(committee_study):
    from autokd.report import retiming_section
    from autokd.search.retime import COMMITTEE_SKIPPED, front_members, retime_front

    cfg, study, _ = committee_study
    front = front_members(study)
    singles = {str(t.number) for t in front if trial_kind(trial_figures(t)) == "single"}
    committees = {str(t.number) for t in front} - singles
    assert singles and committees, [(t.number, trial_kind(trial_figures(t))) for t in front]
    retiming = retime_front(study, cfg, trigger="report")
    assert set(retiming["members"]) == singles and retiming["skipped"] == dict.fromkeys(committees, COMMITTEE_SKIPPED)
    notes = retiming_section(study).notes
    assert any(note.startswith("not re-timed: trial(s) ") and all(n in note for n in committees) for note in notes)
