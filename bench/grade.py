"""Grading figure for the labs issue: bring up N labs of 5 nodes on this host, solve the bench exercise on
every lab, then grade them all concurrently, as `labctl grade --class` does. Prints one JSON object.

The three phases are timed separately: bring-up (`labctl up`, swarm formed), solving (each step's `run`
commands through the docker CLI in the nodes, as `labctl run --auto` applies them, then waiting until
every check holds), and grading — the figure the target is about: how long scoring a *solved* class
takes. The exercise (`BENCH_EXERCISE`) reads what a class lab has: swarm state on every node, node
status, roles and leader, a service's replicas, published port and task placement, and HTTP through the
routing mesh on every node. Memory is the host's in use (MemTotal - MemAvailable): before bring-up,
with labs up, once solved, and the peak while grading. Every lab is removed in `finally`.
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

TARGET_GRADING_S = 30.0
BENCH_EXERCISE: dict[str, Any] = {
    "id": "bench", "title": "grading benchmark", "topology": {"managers": 3, "workers": 2},
    "steps": [
        {"id": "swarm", "title": "swarm", "checks": [
            {"title": "swarm active", "kind": "swarm.state", "params": {"node": "all"}},
            {"title": "nodes ready", "kind": "node.status", "params": {"node": "all"}},
            {"title": "3 managers", "kind": "nodes.count", "params": {"role": "manager", "count": 3}},
            {"title": "manager1 leads", "kind": "node.leader", "params": {"node": "manager1"}},
        ]},
        {"id": "web", "title": "web",
         "run": [{"node": "manager1", "cmd": "docker service create --detach --name web --replicas 2 "
                                             "--constraint node.role==worker --publish 8080:80 nginx"}],
         "checks": [
             {"title": "web 2/2", "kind": "service.replicas", "params": {"service": "web", "replicas": 2}, "within": "60s"},
             {"title": "web publishes 8080", "kind": "service.ports", "params": {"service": "web", "published": 8080}},
             {"title": "tasks on workers", "kind": "tasks.count", "params": {"service": "web", "node": "workers", "min": 1},
              "within": "60s"},
             {"title": "mesh", "kind": "http.get", "params": {"port": 8080, "timeout": "1s"}, "within": "60s"},
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


class PeakMemory:
    """Samples the host's memory in use every 0.2 s while it is open."""

    def __init__(self) -> None:
        self.mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.mib = max(self.mib, mem_used_mib())
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--labs", type=int, default=10)
    ap.add_argument("--max-wait", type=float, default=10.0, help="cap on each check's wait budget while grading (s)")
    ap.add_argument("--parallel-up", type=int, default=2, help="labs brought up at once")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="labctl-bench-grade-")
    os.environ["LABCTL_HOME"] = home

    from labctl import lifecycle, registry
    from labctl.exercises.grader import grade, grade_many
    from labctl.exercises.labs import spec_for
    from labctl.exercises.model import parse_exercise
    from labctl.exercises.results import LabResult
    from labctl.exercises.session import Session
    from labctl.exercises.target import LabTarget
    from labctl.providers.netns import NetnsProvider

    ex = parse_exercise(BENCH_EXERCISE)
    names = [f"bg-{os.getpid() % 10000}-{i}" for i in range(args.labs)]
    result: dict[str, Any] = {"bench": "grade", "labs": args.labs, "nodes_per_lab": len(ex.lab.nodes),
                              "checks_per_lab": len(ex.checks), "max_wait_s": args.max_wait,
                              "cpus": os.cpu_count(), "mem_used_mib_before": mem_used_mib()}
    targets: list[LabTarget] = []
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.parallel_up) as pool:
            records = [r for r, _ in pool.map(lambda n: lifecycle.up(spec_for(ex, n)), names)]
        result["bringup_s"] = round(time.perf_counter() - t0, 2)
        result["mem_used_mib_labs_up"] = mem_used_mib()
        targets = [LabTarget(NetnsProvider(r)) for r in records]

        def solve(target: LabTarget) -> LabResult:
            """`labctl run --auto` without faults: every step's `run`, then its checks until they hold."""
            session = Session(ex, target)
            result = session.new_result(target.lab.name, None)
            for step in ex.steps:
                session.apply_runs(step)
                result.checks += session.check([(step.id, c) for c in step.checks])
            return result

        t0 = time.perf_counter()
        solved = grade_many([lambda t=t: solve(t) for t in targets])
        result["solve_s"] = round(time.perf_counter() - t0, 2)
        result["solved_labs"] = sum(1 for r in solved if r.score == r.max_score)
        result["mem_used_mib_solved"] = mem_used_mib()

        with PeakMemory() as peak:
            t0 = time.perf_counter()
            results = grade_many([lambda t=t: grade(Session(ex, t), t.lab.name, max_wait=args.max_wait)
                                  for t in targets])
            result["grading_s"] = round(time.perf_counter() - t0, 2)
        result["mem_used_mib_peak_grading"] = peak.mib
        result["target_grading_s"] = TARGET_GRADING_S
        result["meets_target"] = result["grading_s"] <= TARGET_GRADING_S
        result["scores"] = {r.lab: f"{r.score}/{r.max_score}" for r in results}
        result["slowest_check_s"] = max((c.duration for r in results for c in r.checks), default=0.0)
        failing: dict[str, int] = {}
        for r in results:
            for c in r.checks:
                if not c.passed:
                    failing[c.title] = failing.get(c.title, 0) + 1
        result["failing_checks"] = failing
        result["sample_failure"] = next((c.detail for r in results for c in r.checks if not c.passed), "")
    finally:
        for t in targets:
            t.close()
        t0 = time.perf_counter()
        problems: list[str] = []
        for name in names:
            if name not in registry.names():  # never came up: nothing to remove
                continue
            try:
                problems += lifecycle.down(name)
            except Exception as e:
                problems.append(f"{name}: {e}")
        result["teardown_s"] = round(time.perf_counter() - t0, 2)
        result["teardown_problems"] = problems
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
