"""A client loop during a step: "the update caused no failed request" is a claim about what clients saw
while it happened, so it cannot be read from the swarm afterwards. When the step starts, a thread
requests the published port on the nodes' lab addresses in turn (as `while true; do curl …; done` on
a client would) and counts what failed; the check judges that count once the step's update is done.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from labctl.exercises.checks.context import CheckContext, attrs_of, explain
from labctl.exercises.checks.registry import CheckError, Outcome, Params, check
from labctl.exercises.durations import Duration

MAX_ERRORS_KEPT = 5


class LoopParams(Params):
    port: int
    path: str = "/"
    nodes: str = "all"  # the loop sends its requests to these nodes' addresses in turn
    status: int = 200  # any other answer, a refused connection or a timeout is a failed request
    interval: Duration = 0.2  # pause between two requests
    timeout: Duration = 2.0  # per request
    max_failed: int = 0
    min_requests: int = 10  # the loop must have sampled the step this much before it can pass
    service: str | None = None  # the window ends when an update of this service begun in the step completes


@dataclass
class LoopStats:
    requests: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few failures, "+1.2s node: what"


class ClientLoop:
    """The watcher: one thread, one request at a time, until `stop()`."""

    def __init__(self, ctx: CheckContext, p: LoopParams, update_before: Any) -> None:
        self.target = ctx.target
        self.p = p
        self.urls = [(name, f"http://{ctx.lab.node(name).ip}:{p.port}{p.path}") for name in ctx.lab.select(p.nodes)]
        self.update_before = update_before  # the service's update status when the step started
        self.started = time.monotonic()
        self._stats = LoopStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"client-loop:{p.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            name, url = self.urls[i % len(self.urls)]
            i += 1
            error = self._request(url)
            with self._lock:
                self._stats.requests += 1
                if error is not None:
                    self._stats.failed += 1
                    if len(self._stats.errors) < MAX_ERRORS_KEPT:
                        self._stats.errors.append(f"+{time.monotonic() - self.started:.1f}s {name}: {error}")
            self._stop.wait(self.p.interval)

    def _request(self, url: str) -> str | None:
        try:
            resp = self.target.http_get(url, self.p.timeout)
        except Exception as e:
            return explain(e)
        return None if resp.status == self.p.status else f"status {resp.status}"

    def stats(self) -> LoopStats:
        with self._lock:
            return LoopStats(self._stats.requests, self._stats.failed, list(self._stats.errors))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.p.timeout + 1)


def update_status(ctx: CheckContext, service: str) -> dict[str, Any] | None:
    """The service's UpdateStatus (`docker service inspect`), None before its first update."""
    status = attrs_of(ctx.service(service)).get("UpdateStatus")
    return dict(status) if status else None


def begin_loop(ctx: CheckContext, p: LoopParams) -> ClientLoop:
    before = None
    if p.service is not None:
        try:
            before = update_status(ctx, p.service)
        except CheckError:
            before = None  # no such service yet: any update that completes is the step's
    return ClientLoop(ctx, p, before)


@check("http.loop", LoopParams, begin=begin_loop, step_only=True)
def http_loop(ctx: CheckContext, p: LoopParams) -> Outcome:
    """A client loop that ran from the step's start saw at most `max_failed` failed requests."""
    loop = ctx.watchers.get(ctx.check_id or "")
    if not isinstance(loop, ClientLoop):
        return Outcome(False, "no client loop ran during this step (only `labctl run` runs one)")
    s = loop.stats()
    observed = {"requests": s.requests, "failed": s.failed, "errors": s.errors}
    so_far = f"{s.requests} requests to :{p.port}{p.path}, {s.failed} failed"
    if s.failed > p.max_failed:
        return Outcome(False, f"{so_far} since the step started (at most {p.max_failed} allowed); "
                       + "; ".join(s.errors), observed)
    if p.service is not None:
        now = update_status(ctx, p.service)
        state = (now or {}).get("State")
        if state != "completed" or now == loop.update_before:
            shown = state or "no update yet"
            return Outcome(False, f"no update of {p.service} begun in this step has completed ({shown}); {so_far}", observed)
    if s.requests < p.min_requests:
        return Outcome(False, f"only {so_far} so far, at least {p.min_requests} needed", observed)
    during = f" while {p.service} was updated" if p.service else ""
    return Outcome(True, f"{so_far}{during}", observed)
