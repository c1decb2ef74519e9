"""Grading figure for the labs issue: bring up N labs of 5 nodes on this host (timed separately), then
grade them all concurrently with one exercise, as `labctl grade --class` does. Prints one JSON object.

The exercise (`BENCH_EXERCISE`) reads what a class lab has: swarm state on every node, node status and
roles, a service's replicas, tasks and published port, HTTP through the mesh on every node. Checks that
cannot pass yet (no service API on the agent) still cost their capped wait, which is measured too.
Memory is the host's in use (MemTotal - MemAvailable): before bring-up, with labs up, and the peak while
grading.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BENCH_EXERCISE: dict[str, Any] = {
    "id": "bench", "title": "grading benchmark", "topology": {"managers": 3, "workers": 2},
    "steps": [
        {"id": "swarm", "title": "swarm", "checks": [
            {"title": "swarm active", "kind": "swarm.state", "params": {"node": "all"}},
            {"title": "nodes ready", "kind": "node.status", "params": {"node": "all"}},
            {"title": "3 managers", "kind": "nodes.count", "params": {"role": "manager", "count": 3}},
            {"title": "manager1 leads", "kind": "node.leader", "params": {"node": "manager1"}},
        ]},
        {"id": "web", "title": "web", "checks": [
            {"title": "web 2/2", "kind": "service.replicas", "params": {"service": "web", "replicas": 2}},
            {"title": "web publishes 8080", "kind": "service.ports", "params": {"service": "web", "published": 8080}},
            {"title": "tasks on workers", "kind": "tasks.count", "params": {"service": "web", "node": "workers", "min": 1}},
            {"title": "mesh", "kind": "http.get", "params": {"port": 8080, "timeout": "1s"}},
        ]},
    ],
}


def mem_used_mib() -> float:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return round((info["MemTotal"] - info["MemAvailable"]) / 1024, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--labs", type=int, default=10)
    ap.add_argument("--max-wait", type=float, default=10.0, help="cap on each check's wait budget (s)")
    ap.add_argument("--parallel-up", type=int, default=2, help="labs brought up at once")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="labctl-bench-grade-")
    os.environ["LABCTL_HOME"] = home

    from labctl import lifecycle
    from labctl.exercises.grader import grade, grade_many
    from labctl.exercises.labs import spec_for
    from labctl.exercises.model import parse_exercise
    from labctl.exercises.session import Session
    from labctl.exercises.target import LabTarget
    from labctl.providers.netns import NetnsProvider

    ex = parse_exercise(BENCH_EXERCISE)
    names = [f"bg-{os.getpid() % 10000}-{i}" for i in range(args.labs)]
    result: dict[str, Any] = {"bench": "grade", "labs": args.labs, "nodes_per_lab": len(ex.lab.nodes),
                              "checks_per_lab": len(ex.checks), "max_wait_s": args.max_wait,
                              "mem_used_mib_before": mem_used_mib()}
    records = []
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.parallel_up) as pool:
            records = [r for r, _ in pool.map(lambda n: lifecycle.up(spec_for(ex, n)), names)]
        result["bringup_s"] = round(time.perf_counter() - t0, 2)
        result["mem_used_mib_labs_up"] = mem_used_mib()

        peak = {"mib": 0.0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak["mib"] = max(peak["mib"], mem_used_mib())
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        targets = [LabTarget(NetnsProvider(r)) for r in records]
        t0 = time.perf_counter()
        results = grade_many([lambda t=t, r=r: grade(Session(ex, t), r.name, max_wait=args.max_wait)
                              for t, r in zip(targets, records, strict=True)])
        result["grading_s"] = round(time.perf_counter() - t0, 2)
        stop.set()
        sampler.join()
        for t in targets:
            t.close()
        result["mem_used_mib_peak_grading"] = peak["mib"]
        result["target_grading_s"] = 30
        result["scores"] = {r.lab: f"{r.score}/{r.max_score}" for r in results}
        failing: dict[str, int] = {}
        for r in results:
            for c in r.checks:
                if not c.passed:
                    failing[c.title] = failing.get(c.title, 0) + 1
        result["failing_checks"] = failing
        result["sample_failure"] = next((c.detail for r in results for c in r.checks if not c.passed), "")
    finally:
        t0 = time.perf_counter()
        for name in names:
            try:
                lifecycle.down(name)
            except Exception:
                pass
        result["teardown_s"] = round(time.perf_counter() - t0, 2)
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
