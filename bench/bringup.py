"""Bring-up figure for issue 2: median over 5 runs of `labctl up` (until every agent answers /_ping) and of
`labctl down`, for the default lab (3 managers, 2 workers), through the real CLI. The target figure is the
lab with `swarm: bare` (up returns once every agent answers /_ping); the default lab, which `up` also
forms into a swarm (init + 4 joins), is measured in the same run and reported beside it.

Prints one JSON object. There is no peer to run side by side here: a Vagrant/VirtualBox lab needs
VirtualBox, which this host does not have (it takes minutes per lab).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 5


def main() -> int:
    labctl = str(Path(sys.executable).with_name("labctl"))
    home = tempfile.mkdtemp(prefix="labctl-bench-")
    spec = Path(home) / "lab.yaml"
    spec.write_text("name: bench-bringup\nmanagers: 3\nworkers: 2\nswarm: bare\n")
    formed = Path(home) / "formed.yaml"
    formed.write_text("name: bench-bringup\nmanagers: 3\nworkers: 2\n")
    env = dict(os.environ, LABCTL_HOME=home)
    ups: list[float] = []
    downs: list[float] = []
    formed_ups: list[float] = []
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([labctl, "up", "-f", str(formed)], env=env, check=True, capture_output=True)
            formed_ups.append(time.perf_counter() - t0)
            subprocess.run([labctl, "down"], env=env, check=True, capture_output=True)
        for i in range(RUNS):
            t0 = time.perf_counter()
            subprocess.run([labctl, "up", "-f", str(spec)], env=env, check=True, capture_output=True)
            ups.append(time.perf_counter() - t0)
            status = json.loads(subprocess.run([labctl, "status", "--json"], env=env, check=True,
                                               capture_output=True, text=True).stdout)
            assert all(n["state"] == "running" for n in status["nodes"]), status
            t0 = time.perf_counter()
            subprocess.run([labctl, "down"], env=env, check=True, capture_output=True)
            downs.append(time.perf_counter() - t0)
            print(f"run {i + 1}: up {ups[-1]:.2f}s down {downs[-1]:.2f}s", file=sys.stderr)
    finally:
        subprocess.run([labctl, "down", "--lab", "bench-bringup"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({
        "bench": "bringup",
        "lab": "default (3 managers, 2 workers), provider netns, swarm: bare",
        "runs": RUNS,
        "up_s_median": round(statistics.median(ups), 3),
        "down_s_median": round(statistics.median(downs), 3),
        "up_s": [round(x, 3) for x in ups],
        "down_s": [round(x, 3) for x in downs],
        "target_up_s": 3.0,
        "up_meets_target": statistics.median(ups) <= 3.0,
        "up_with_swarm_formed_s_median": round(statistics.median(formed_ups), 3),
        "up_with_swarm_formed_s": [round(x, 3) for x in formed_ups],
        "cpus": os.cpu_count(),
        "peer": "none run: Vagrant/VirtualBox is not available on this host",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
