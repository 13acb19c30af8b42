"""The Ray Tune executor end to end on SQLite: real Ray, real Optuna, real training (tiny).

Each test drives ``autokd search --executor ray`` as a subprocess with a private local Ray of
2 CPUs; students are cnn5 on digits with 1-30 short epochs, the teacher a 2-epoch cnn5.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray_support import (assert_study_exact, cmdline, descendants, kill_tree, load, run_search, start_search,
                         wait_for, write_study)

from autokd.config import load_study_config
from autokd.record import DRIVER_ATTR, study_retimings, trial_figures
from autokd.search.internals import set_system_attr
from autokd.search.study import open_study, reclaim_stale_trials, single_sqlite_driver

# Tests that ask() outside Study.optimize on a heartbeat storage, as the Ray driver does.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


def _complete(study_path: Path) -> int:
    try:
        return len(load(study_path).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # the study does not exist yet
        return 0


def _complete_and_running(study_path: Path) -> bool:
    """At least one trial complete and another one training (with its parameters) right now."""
    try:
        trials = load(study_path).get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    except Exception:  # the study does not exist yet
        return False
    return (any(t.state == TrialState.COMPLETE for t in trials)
            and any(t.state == TrialState.RUNNING and t.params for t in trials))


@pytest.fixture
def two_node_cluster():
    """A Ray cluster of two 1-CPU nodes on this machine (``ray start --head`` + one ``ray start --address``)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_ray_search_on_a_cluster_concurrency_2_holds_exactly_the_finished_trials(tmp_path, tiny_teacher,
                                                                                 two_node_cluster, figure):
    study = write_study(tmp_path, n_trials=3, epochs=2, teacher=tiny_teacher, retime_front=True)
    done = run_search(study, "--address", two_node_cluster)  # joins it: one trial per node at a time
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trials (ray)" in done.stdout
    complete = assert_study_exact(load(study), 3)
    assert all(t.user_attrs["executor"] == "ray" for t in complete)
    assert all(Path(t.user_attrs["weights_path"]).is_file() for t in complete)
    assert all(t.user_attrs.get("weights_artifact") for t in complete)
    # Two workers at once: some trials overlapped in time.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in complete)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    # the driver stored the teacher's figures (a 1-epoch teacher: measured 0.257-0.563, chance 0.1)
    assert figure("teacher accuracy", load(study).user_attrs["teacher"]["accuracy"]) > 0.15
    # after the last trial the driver re-timed exactly the front, together (autokd.search.retime)
    retimings = study_retimings(load(study))
    assert len(retimings) == 1 and set(retimings[0]["members"]) == {str(t.number) for t in load(study).best_trials}
    assert "front re-timed together" in done.stdout


@pytest.mark.slow
def test_worker_killed_mid_trial_is_retried_from_its_epoch_checkpoint(tmp_path, tiny_teacher):
    study = write_study(tmp_path, n_trials=1, epochs=8, batch_size=32, max_concurrent=1, teacher=tiny_teacher)
    proc = start_search(study)
    checkpoint = tmp_path / "out" / "trials" / "00000" / "epoch" / "epoch.pt"
    killed = []
    try:
        wait_for(checkpoint.is_file, 150, "the first epoch checkpoint", proc)
        for pid in descendants(proc.pid):
            if "ImplicitFunc" in cmdline(pid):  # the worker process running the trainable
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        assert killed, [cmdline(p) for p in descendants(proc.pid)]
        proc.wait(timeout=200)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 0, study.with_suffix(".log").read_text()[-3000:]
    [trial] = assert_study_exact(load(study), 1)
    assert trial.number == 0  # the same Optuna trial, retried by Tune, not a new one
    assert trial_figures(trial)["resumed_from_epoch"] >= 1


def test_direction_mismatch_on_resume_is_refused(tmp_path):
    study = write_study(tmp_path, objectives=["accuracy", "params"])
    cfg = load_study_config(study)
    (tmp_path / "out").mkdir()
    open_study(cfg)  # created as maximize accuracy, minimize params
    flipped = write_study(tmp_path, objectives=["params", "accuracy"])
    done = subprocess.run([sys.executable, "-m", "autokd", "search", str(flipped)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "objectives" in done.stderr and "Traceback" not in done.stderr


def test_second_driver_on_one_sqlite_file_is_refused_up_front(tmp_path):
    study = write_study(tmp_path)
    cfg = load_study_config(study)
    (tmp_path / "out").mkdir()
    with single_sqlite_driver(cfg):  # this test process plays the first driver
        done = run_search(study, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PostgreSQL" in done.stderr or "postgresql" in done.stderr
    assert "teacher" not in done.stdout  # refused before any training


def test_reclaim_leaves_live_drivers_trials_alone(tmp_path):
    study = write_study(tmp_path)
    (tmp_path / "out").mkdir()
    cfg = load_study_config(study)
    s = open_study(cfg)
    live = s.ask()
    set_system_attr(s, live, DRIVER_ATTR, "some-other-host:1:1")
    dead = s.ask()
    dead.suggest_float("lr", 0.01, 0.1)
    set_system_attr(s, dead, DRIVER_ATTR, f"{socket.gethostname()}:999999999:1")
    assert reclaim_stale_trials(s, cfg) == [dead.number]
    states = {t.number: t.state for t in s.get_trials(deepcopy=False)}
    assert states[live.number] == TrialState.RUNNING and states[dead.number] == TrialState.FAIL
    [waiting] = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert waiting.user_attrs["retry_of"] == dead.number
    assert reclaim_stale_trials(s, cfg) == []  # idempotent: one re-enqueue per dead trial


def test_a_driver_killed_between_creating_and_claiming_a_trial_leaves_it_reclaimable(tmp_path):
    """A trial is named its driver's from birth: one whose driver died before claiming it (no parameters, no
    heartbeat yet) is reclaimed by the next run, not left RUNNING in a budget slot the next run waits for."""
    study = write_study(tmp_path)
    (tmp_path / "out").mkdir()
    cfg = load_study_config(study)
    open_study(cfg)
    script = ("import os, sys; from autokd.config import load_study_config; from autokd.search.study import open_study; "
              "open_study(load_study_config(sys.argv[1])).ask(); os._exit(0)")  # dies right after the creation
    subprocess.run([sys.executable, "-c", script, str(study)], check=True, timeout=120)
    s = open_study(cfg)
    [orphan] = s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert reclaim_stale_trials(s, cfg) == [orphan.number]
    assert not s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_the_study_over_http(tmp_path):
    from autokd.record import record_result

    study = write_study(tmp_path)
    cfg = load_study_config(study)
    (tmp_path / "out").mkdir()
    s = open_study(cfg)
    for acc in (0.5, 0.7):
        trial = s.ask()
        trial.suggest_float("lr", 0.01, 0.1)
        s.tell(trial, record_result(trial, {"accuracy": acc, "params": 1000.0, "latency_ms": 0.1}, cfg))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autokd", "dashboard", str(study), "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    answers.body = json.loads(r.read())
                return True
            except OSError:
                return False

        wait_for(answers, 60, "optuna-dashboard to answer", proc)
        [summary] = [x for x in answers.body["study_summaries"] if x["study_name"] == cfg.name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0",
                                    timeout=5) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"http://127.0.0.1:{port}/dashboard/" in out


def test_searcher_tells_complete_pruned_failed_and_interrupted_trials(tmp_path):
    """StudySearch's completion hook, driven directly (real OptunaSearch and storage, no Ray cluster)."""
    from autokd.space import SearchSpace
    from autokd.search.lifecycle import TrialLifecycle
    from autokd.search.ray_executor import META, _make_study_search_class

    study_path = write_study(tmp_path, n_trials=4)
    cfg = load_study_config(study_path)
    (tmp_path / "out").mkdir()
    s = open_study(cfg)
    pruned, told = {"t-pruned": None}, []
    lifecycle = TrialLifecycle(s, cfg, SearchSpace.load(cfg.resolve(cfg.search_space)), executor="ray",
                               teacher_accuracy=0.9)
    searcher = _make_study_search_class()(lifecycle, pruned_by_scheduler=pruned, on_told=told.append)
    configs = {tid: searcher.suggest(tid) for tid in ("t-ok", "t-pruned", "t-failed", "t-stopped")}
    assert searcher.suggest("t-more") is None  # four RUNNING trials fill the budget of four: wait
    assert configs["t-ok"][META]["number"] == 0 and "config" in configs["t-ok"][META]
    metrics = {"accuracy": 0.8, "params": 1234, "latency_ms": 0.2, "weights_path": None}
    searcher.on_trial_complete("t-ok", {**metrics, "final": True, "metrics_json": json.dumps(metrics)})
    searcher.on_trial_complete("t-pruned", {"epoch": 1, "accuracy": 0.1, "final": False})
    searcher.on_trial_complete("t-failed", {"final": True, "failed": "FloatingPointError: diverged"})
    searcher.on_trial_complete("t-stopped", {"epoch": 2, "accuracy": 0.4, "final": False})
    by_number = {t.number: t for t in s.get_trials(deepcopy=False)}
    ok, pr, fa, st = (by_number[configs[t][META]["number"]] for t in ("t-ok", "t-pruned", "t-failed", "t-stopped"))
    assert ok.state == TrialState.COMPLETE and ok.values == [0.8, 1234.0, 0.2]
    assert ok.constraints == {"max_params": 1234 - 100000} and ok.user_attrs["teacher_accuracy"] == 0.9
    assert pr.state == TrialState.PRUNED and pr.user_attrs["accuracy"] == 0.1 and pr.user_attrs["epoch"] == 1
    assert fa.state == TrialState.FAIL and "diverged" in fa.user_attrs["failed_because"]
    assert st.state == TrialState.FAIL and st.user_attrs["failed_because"] == "driver stopped"
    [requeued] = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert requeued.user_attrs["retry_of"] == st.number and requeued.system_attrs["fixed_params"] == st.params
    assert [t.number for t in told] == [ok.number, pr.number, fa.number, st.number]
    # The "wait" above would be reused for a second, but a tell makes the next suggestion ask the database
    # again at once (the last trial's tell ends a run without Tune sleeping on a stale "wait").
    assert searcher.suggest("t-next")[META]["number"] == requeued.number  # the re-enqueued trial runs next
    assert s.trials[requeued.number].params == st.params
    # A driver that loses the race for the last slot gives its trial back: FAIL (surplus), and a
    # re-enqueued trial's parameters stay queued for whichever driver has room.
    lifecycle.give_back(searcher.running.pop("t-next"))
    surplus = s.trials[requeued.number]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["failed_because"].startswith("surplus")
    [queued_again] = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert queued_again.system_attrs["fixed_params"] == st.params
    assert queued_again.user_attrs["retry_of"] == st.number


def test_ray_started_beside_the_teacher_outlives_its_start_and_stops_with_the_search(tmp_path):
    """``autokd search`` starts Ray on a thread while the teacher trains (RayStart). Ray's processes die with
    the thread that spawned them, so that thread must hold on until the search ends; the session stops Ray
    on the way out, when the teacher (or anything before the trials) fails too."""
    import ray

    from autokd.config import StudyConfig
    from autokd.search.ray_executor import RayExecutor
    from autokd.search.ray_runtime import RayStart

    (tmp_path / "out").mkdir()
    cfg = StudyConfig(output=str(tmp_path / "out"))
    start = RayStart(cfg)
    try:
        assert start.wait() is True
        time.sleep(2)  # a thread that returned after ray.init would have taken GCS and the raylet with it by now
        worker_pid, worker_nice = ray.get(ray.remote(lambda: (os.getpid(), os.nice(0))).remote(), timeout=60)
        assert worker_pid != os.getpid()  # a live worker
        assert worker_nice == os.nice(0)  # at the driver's priority, not Ray's nice 15 (starved beside other work)
    finally:
        start.stop()
    assert not ray.is_initialized()
    with pytest.raises(RuntimeError, match="the teacher failed"):
        with RayExecutor().session(cfg):
            raise RuntimeError("the teacher failed")
    assert not ray.is_initialized()
