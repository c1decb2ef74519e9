"""Push figure for issue 9: the agent pushed over real SSH to the 5 nodes of the default lab (3 managers,
2 workers; netns nodes each running sshd, as `labctl up --via ssh` builds them).

* cold: nodes with nothing installed (venv, dependencies, project, service all new), host caches warm
  (the wheelhouse is downloaded once per Python version; the project wheel is built once per source);
* cold_rebuild: the same plus the project wheel rebuilt on the host (what the first push after a source
  change costs);
* warm: a second push with nothing changed (median of 3): probe, agent already running, /_ping.

Prints one JSON object. Targets: cold <= 15 s, warm <= 3 s.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labctl import lifecycle, registry, wheelhouse
from labctl.providers import netns_sshd
from labctl.providers.netns import NetnsProvider
from labctl.spec import parse_spec

LAB = "bench-push"
WIPE = "/var/lib/docker/.labagent/labagentctl stop; rm -rf /var/lib/docker/.labagent"


def _provider() -> NetnsProvider:
    return NetnsProvider(registry.load(LAB))


def _wipe(p: NetnsProvider) -> None:
    for n in p.spec.nodes:
        subprocess.run(p.exec_argv(n.name, ["sh", "-c", WIPE]), check=True, capture_output=True)


def _timed_push(p: NetnsProvider) -> tuple[float, list[dict[str, object]]]:
    t0 = time.perf_counter()
    results = netns_sshd.push_agents(p)
    return time.perf_counter() - t0, [r.to_json() for r in results]


def main() -> int:
    home = tempfile.mkdtemp(prefix="labctl-bench-push-")
    os.environ["LABCTL_HOME"] = home
    spec = parse_spec({"name": LAB, "managers": 3, "workers": 2, "via": "ssh", "swarm": "bare"})
    try:
        lifecycle.up(spec)  # builds the nodes and pushes once (fills the host caches)
        p = _provider()
        # Other work may edit the sources meanwhile: pin the wheel so "warm" really means "unchanged".
        real_builder = wheelhouse.project_wheel
        built = real_builder()
        wheelhouse.project_wheel = lambda: built  # type: ignore[assignment]
        _wipe(p)
        cold, cold_results = _timed_push(p)
        _wipe(p)
        shutil.rmtree(wheelhouse.cache_root() / "project", ignore_errors=True)
        wheelhouse.project_wheel = real_builder  # type: ignore[assignment]
        cold_rebuild, _ = _timed_push(p)
        rebuilt = real_builder()
        wheelhouse.project_wheel = lambda: rebuilt  # type: ignore[assignment]
        warms = []
        warm_results: list[dict[str, object]] = []
        for _ in range(3):
            w, warm_results = _timed_push(p)
            warms.append(w)
        assert all(r["restarted"] for r in cold_results), cold_results
        assert not any(r["restarted"] or r["uploaded"] for r in warm_results), warm_results
        states = [s.state for s in p.status()]
        assert states == ["running"] * 5, states
    finally:
        if LAB in registry.names():
            lifecycle.down(LAB)
        shutil.rmtree(home, ignore_errors=True)
    warm = statistics.median(warms)
    print(json.dumps({
        "bench": "push",
        "lab": "default (3 managers, 2 workers), provider netns --via ssh (sshd per node), swarm bare",
        "cold_s": round(cold, 3),
        "cold_rebuild_s": round(cold_rebuild, 3),
        "warm_s_median": round(warm, 3),
        "warm_s": [round(x, 3) for x in warms],
        "cold_per_node_s": {str(r["node"]): r["seconds"] for r in cold_results},
        "target_cold_s": 15.0,
        "target_warm_s": 3.0,
        "cold_meets_target": cold <= 15.0,
        "cold_rebuild_meets_target": cold_rebuild <= 15.0,
        "warm_meets_target": warm <= 3.0,
        "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
