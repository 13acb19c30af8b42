"""Where the demo's time goes: CPU seconds of each phase of ``autokd search`` with no arguments.

Wall clock on a shared machine says little, so every phase here is timed in CPU seconds of one
process at one torch thread (``time.process_time``; one thread, so no OpenMP spin is counted),
with the wall time beside it. Phases: importing the CLI and the search stack, starting a private
Ray, loading digits, each teacher epoch, the teacher's figures (the study's teacher row), the
teacher-logit cache, and for students of each family of the space: build, each epoch, the
epoch checkpoint, accuracy on the splits, params/size/MACs, the ONNX export and its onnxruntime
latency, the saved checkpoint. On 2 cores the demo's wall time is about the sum of its CPU
seconds over 2 while both cores are busy.

    python -m bench.demo_phases [--study studies/default.yaml] [--epochs 12]   # bench/results/demo_phases.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.common import write_result

REPO = Path(__file__).resolve().parents[1]
#: Students of each family of the demo space (and sizes the demo's search sampled in its 2026-12-07 run).
STUDENTS = [("cnn5", {"width": 0.417, "hidden": 33}), ("cnn5", {"width": 0.154, "hidden": 59}),
            ("resnet", {"depth": 8, "width": 12}), ("resnet", {"depth": 20, "width": 4}),
            ("resnet", {"depth": 14, "width": 16}), ("vgg", {"variant": 7, "width": 0.089}),
            ("vgg", {"variant": 7, "width": 0.243}), ("mobilenetv2", {"width": 0.273})]


class Clock:
    """CPU and wall seconds of named phases (``with clock("name"):``), accumulated."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            slot = self.phases.setdefault(name, {"cpu_s": 0.0, "wall_s": 0.0, "n": 0})
            slot["cpu_s"] += time.process_time() - cpu
            slot["wall_s"] += time.perf_counter() - wall
            slot["n"] += 1


def child_seconds(argv: list[str]) -> dict[str, float]:
    """CPU (user + sys) and wall seconds of a subprocess and whatever it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(argv, check=True, capture_output=True, env=env, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "wall_s": time.perf_counter() - started}


def process_tree_cpu(root: int) -> float:
    """CPU seconds so far of every live process below ``root`` (Ray's GCS, raylet, workers), from /proc."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return sum(cpu[pid] for pid in below)


def startup_phases() -> dict[str, Any]:
    """Interpreter + imports of the CLI and of the search stack, and a private Ray started and stopped."""
    py = sys.executable
    phases = {
        "python_bare": child_seconds([py, "-c", "pass"]),
        "import_cli": child_seconds([py, "-c", "import autokd.cli"]),
        "import_search_stack": child_seconds([py, "-c", "import autokd.cli, autokd.search.ray_executor, ray.tune, "
                                                        "optuna, onnxruntime, autokd.trial"]),
        "cli_help": child_seconds([py, "-m", "autokd", "search", "--help"]),
    }
    ray_probe = ("import time, os, ray\n"
                 "from bench.demo_phases import process_tree_cpu\n"
                 "t = time.perf_counter(); ray.init(address='local', num_cpus=2, include_dashboard=False,"
                 " log_to_driver=False)\n"
                 "up = time.perf_counter() - t\n"
                 "@ray.remote(num_cpus=1)\n"
                 "def f():\n    import torch, autokd.trial\n    return os.getpid()\n"
                 "t = time.perf_counter(); ray.get([f.remote(), f.remote()]); workers = time.perf_counter() - t\n"
                 "print(up, workers, process_tree_cpu(os.getpid()), flush=True)\n"
                 "t = time.perf_counter(); ray.shutdown(); print(time.perf_counter() - t)\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([py, "-c", ray_probe], check=True, capture_output=True, text=True, env=env, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    up, workers, tree_cpu = map(float, out.stdout.split("\n")[0].split())
    phases["ray"] = {"init_wall_s": up, "two_workers_importing_autokd_wall_s": workers,
                     "ray_processes_cpu_s": tree_cpu, "shutdown_wall_s": float(out.stdout.split("\n")[1]),
                     "driver_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    return phases


class TimedCheckpointer:
    """An :class:`autokd.checkpoint.EpochCheckpointer` whose saves are timed on ``clock``."""

    def __init__(self, path: Path, clock: Clock, name: str):
        from autokd.checkpoint import EpochCheckpointer

        self.inner, self.clock, self.name = EpochCheckpointer(path), clock, name

    def save(self, *args: Any) -> Path:
        with self.clock(self.name):
            return self.inner.save(*args)


def teacher_phases(cfg: Any, clock: Clock) -> Any:
    """Data, teacher epochs, the teacher's figures and both logit caches; returns the trials' context."""
    from autokd.context import augment_policy, load_study_data
    from autokd.context import TrialContext
    from autokd.deployed import measure_model
    from autokd.teacher import build_teacher
    from autokd.train import epoch_views

    device = torch.device("cpu")
    with clock("data_load"):
        data = load_study_data(cfg, show_progress=False)
    policy = augment_policy(cfg, data)
    mark = [time.process_time(), time.perf_counter()]

    def on_epoch(epoch: int, metrics: dict) -> None:
        slot = clock.phases.setdefault("teacher_epoch", {"cpu_s": 0.0, "wall_s": 0.0, "n": 0})
        slot["cpu_s"] += time.process_time() - mark[0]
        slot["wall_s"] += time.perf_counter() - mark[1]
        slot["n"] += 1
        mark[:] = [time.process_time(), time.perf_counter()]

    with clock("teacher_total"):
        teacher, summary = build_teacher(cfg, data, policy, device, on_epoch=on_epoch)
    context = TrialContext(data=data, device=device, teacher=teacher, teacher_summary=summary, policy=policy,
                           cache_dir=cfg.output_dir / "teacher_cache", latency=cfg.latency_settings)
    with clock("teacher_figures"):
        measure_model(teacher, context.validation, context.test, data.num_classes, latency=context.latency,
                      device=device)
    for mixup in (False, True):
        cache = context.teaching.logit_cache(mixup)
        for epoch in range(cfg_epochs(cfg)):
            views = epoch_views(cache.policy, len(context.train.images), epoch)
            with clock(f"logit_cache_epoch{'_mixup' if mixup else ''}"):
                cache.epoch_logits(epoch, views)
    return context


def cfg_epochs(cfg: Any) -> int:
    from autokd.space import SearchSpace

    return int(SearchSpace.load(cfg.resolve(cfg.search_space)).train.get("epochs", 10))


def student_phases(context: Any, family: str, knobs: dict[str, Any], epochs: int, loss: str, folder: Path
                   ) -> dict[str, Any]:
    """One student of ``family`` through every stage of a trial, each stage timed (the cache is warm)."""
    from autokd.deployed import model_costs
    from autokd.latency import deployed_latency
    from autokd.measure import split_accuracies
    from autokd.trial import build_student, distill_student, save_student
    from autokd.trial_config import DistillSpec, StudentSpec, TrainSpec, TrialConfig
    from autokd.train import predict

    clock = Clock()
    config = TrialConfig(student=StudentSpec.of(family, **knobs), distill=DistillSpec(loss=loss, alpha=0.6,
                                                                                      temperature=4.0),
                         train=TrainSpec(epochs=epochs, batch_size=64, lr=0.05, weight_decay=1e-4))
    with clock("build"):
        model = build_student(config, context.data)
    checkpointer = TimedCheckpointer(folder / "epoch.pt", clock, "epoch_checkpoint")
    with clock("distill"):
        trained = distill_student(model, config, context.teaching, context.train, context.validation,
                                  checkpointer=checkpointer)
    data, example = context.data, context.test.images[:1].float() / 255.0
    with clock("accuracies"):
        figures = split_accuracies(lambda images: predict(model, images), context.validation, context.test,
                                   data.num_classes)
    with clock("params_size_macs"):
        model_costs(model.eval(), example, None)
    with clock("onnx_export_and_latency"):
        latency = deployed_latency(model.eval(), example, context.latency)
    with clock("save_student"):
        save_student(folder, model[1], config, data, figures, family=family, knobs=knobs)
    phases = clock.phases
    phases["distill"]["cpu_s"] -= phases["epoch_checkpoint"]["cpu_s"]  # counted apart
    phases["distill"]["wall_s"] -= phases["epoch_checkpoint"]["wall_s"]
    return {"family": family, "knobs": knobs, "loss": loss, "epochs": epochs, "phases": phases,
            "validation_accuracy": figures["validation_accuracy"], "test_accuracy": figures["test_accuracy"],
            "history": [h.get("accuracy") for h in trained["history"]], "latency_ms": latency["latency_ms"],
            "latency_runs": latency["latency_runs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=None, help="Study YAML (default: the built-in study).")
    parser.add_argument("--loss", default="kd", help="KD loss of the timed students (kd, fm, none).")
    parser.add_argument("--skip-startup", action="store_true", help="Leave out imports and Ray start.")
    parser.add_argument("--families", nargs="*", default=None, help="Time only students of these families.")
    parser.add_argument("--out", default="demo_phases", help="Result name under bench/results/.")
    args = parser.parse_args()
    from autokd.config import load_study_config

    torch.set_num_threads(1)
    os.environ.setdefault("AUTOKD_LOCK_DIR", "off")  # CPU seconds of this process only: no waiting on others
    startup = {} if args.skip_startup else startup_phases()
    with tempfile.TemporaryDirectory(prefix="autokd-phases-") as tmp:
        cfg = load_study_config(args.study).model_copy(update={"output": tmp})
        clock = Clock()
        context = teacher_phases(cfg, clock)
        epochs = cfg_epochs(cfg)
        students = []
        for i, (family, knobs) in enumerate(s for s in STUDENTS if args.families is None or s[0] in args.families):
            students.append(student_phases(context, family, knobs, epochs, args.loss, Path(tmp) / f"s{i}"))
            print(students[-1]["family"], students[-1]["knobs"],
                  {k: round(v["cpu_s"], 2) for k, v in students[-1]["phases"].items()}, flush=True)
    payload = {"what": "CPU seconds per phase of the demo study, one process, one torch thread",
               "load_average": os.getloadavg(), "study": args.study or "built-in",
               "teacher": cfg.teacher.model_dump(include={"family", "epochs", "lr"}), "startup": startup,
               "study_phases": clock.phases, "students": students}
    print(write_result(args.out, payload, torch.device("cpu")))


if __name__ == "__main__":
    main()
