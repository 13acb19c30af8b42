"""`make bench`: the CPU-sized benchmark set, one after another (each writes bench/results/*.json)."""

import subprocess
import sys

SCRIPTS = ["bench.ray_overhead", "bench.trial_speed", "bench.compression", "bench.committees", "bench.time_to_accuracy",
           "bench.bring_your_own", "bench.latency_retime", "bench.search_efficiency"]

if __name__ == "__main__":
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", name], check=True)
