"""Eager PyTorch vs onnxruntime latency of the demo study's students (search_spaces/default.yaml).

For each student (a spread of sizes over the demo space's families; latency does not depend on the
weights' values, so they are untrained), and its static-int8 copy where compression keeps one:
batch-1 latency timed in eager PyTorch and in onnxruntime (1 intra-op thread, sequential), each as a
trial times it (autokd.latency.deployed_latency: warm-up, median of >= 30 runs over >= 0.5 s).
Members are timed round-robin, ``--repeats`` times, so drift hits every member alike; the JSON
holds each figure per repeat, the median over repeats, max/min per member per backend, the int8
gain per backend, and the rank correlation (Kendall tau, Spearman rho) of the eager and ORT orders.

    PYTHONPATH=. python bench/latency_backends.py               # about a minute on 2 cores
    PYTHONPATH=. python bench/latency_backends.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from scipy.stats import kendalltau, spearmanr

from autokd.config import CompressSpec, LatencySettings
from autokd.checkpoint import deployable
from autokd.compress import compress_model
from autokd.data import load_dataset
from autokd.latency import deployed_latency
from autokd.measure import Split, count_params
from autokd.models import build_model
from bench.common import write_result

#: A spread of the demo space's students, smallest to largest within each family.
STUDENTS = [
    ("cnn5", {"width": 0.125, "hidden": 16}), ("cnn5", {"width": 0.35, "hidden": 48}),
    ("cnn5", {"width": 1.0, "hidden": 128}),
    ("resnet", {"depth": 8, "width": 4}), ("resnet", {"depth": 14, "width": 8}), ("resnet", {"depth": 20, "width": 16}),
    ("vgg", {"variant": 7, "width": 0.0625}), ("vgg", {"variant": 7, "width": 0.25}),
    ("mobilenetv2", {"width": 0.125}), ("mobilenetv2", {"width": 0.5}),
]
BACKENDS = ("torch", "onnxruntime")


def students(data) -> dict[str, torch.nn.Module]:
    """Name -> deployable model (takes [0, 1] input); static int8 copies where compression keeps one."""
    train = Split(data.train_images[:512], data.train_labels[:512])
    models: dict[str, torch.nn.Module] = {}
    for family, knobs in STUDENTS:
        torch.manual_seed(0)
        net = build_model(family, num_classes=data.num_classes, in_channels=data.channels,
                          image_size=data.image_size, **knobs)
        model = deployable(net, data.mean, data.std).eval()
        name = f"{family}({','.join(f'{k}={v}' for k, v in knobs.items())})"
        models[name] = model
        before = {k: 0 for k in ("accuracy", "test_accuracy", "params", "size_bytes", "macs", "latency_ms")}
        before["params"] = before["size_bytes"] = count_params(model)
        quantized, figures = compress_model(model, CompressSpec("int8", quant_mode="static"), train=train,
                                            validation=train, num_classes=data.num_classes, uncompressed=before)
        if figures["compression"] == "int8":
            models[name + " int8"] = quantized.eval()
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    data = load_dataset("digits")
    models = students(data)
    example = data.test_images[:1].float() / 255.0  # (1, C, H, W)
    settings = {b: LatencySettings(backend=b, threads=args.threads, runs=30, min_seconds=0.5) for b in BACKENDS}
    load_before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {b: {n: [] for n in models} for b in BACKENDS}
    started = time.time()
    for _ in range(args.repeats):  # round-robin: every member once per repeat, both backends back to back
        for name, model in models.items():
            for backend in BACKENDS:
                times[backend][name].append(deployed_latency(model, example, settings[backend])["latency_ms"])
    med = {b: {n: statistics.median(v) for n, v in times[b].items()} for b in BACKENDS}
    floats = [n for n in models if not n.endswith(" int8")]
    rows = []
    for name in models:
        row = {"student": name, "params": count_params(models[name])}
        for b in BACKENDS:
            row[f"{b}_ms"] = round(med[b][name], 5)
            row[f"{b}_max_over_min"] = round(max(times[b][name]) / min(times[b][name]), 3)
            row[f"{b}_repeats_ms"] = [round(t, 5) for t in times[b][name]]
            if name + " int8" in models:
                row[f"{b}_int8_speedup"] = round(med[b][name] / med[b][name + " int8"], 3)
        rows.append(row)
    eager, ort = [med["torch"][n] for n in floats], [med["onnxruntime"][n] for n in floats]
    payload = {
        "threads": args.threads, "repeats": args.repeats, "seconds": round(time.time() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "students": rows,
        "eager_vs_ort_kendall_tau": round(float(kendalltau(eager, ort).statistic), 3),
        "eager_vs_ort_spearman_rho": round(float(spearmanr(eager, ort).statistic), 3),
        "eager_over_ort_median_ratio": round(statistics.median(e / o for e, o in zip(eager, ort)), 2),
        "smallest_vs_largest_cnn5": {b: round(med[b][floats[2]] / med[b][floats[0]], 2) for b in BACKENDS},
    }
    path = write_result("latency_backends", payload, torch.device("cpu"))
    for row in rows:
        print(f"{row['student']:<42} {row['params']:>8,}  eager {row['torch_ms']:.4f} ms  ORT {row['onnxruntime_ms']:.4f} ms"
              + (f"  int8 x{row['torch_int8_speedup']} eager, x{row['onnxruntime_int8_speedup']} ORT"
                 if "torch_int8_speedup" in row else ""))
    print(f"Kendall tau eager vs ORT {payload['eager_vs_ort_kendall_tau']}, eager/ORT median "
          f"{payload['eager_over_ort_median_ratio']}x; load {payload['load_average_before']} -> "
          f"{payload['load_average_after']}; {path}")


if __name__ == "__main__":
    main()
