"""HTTP through the routing mesh: a published port answers on every node's lab address."""

from __future__ import annotations

import fnmatch

from labctl.exercises.checks.context import CheckContext, explain
from labctl.exercises.checks.registry import Outcome, Params, check
from labctl.exercises.durations import Duration


class HttpParams(Params):
    port: int
    path: str = "/"
    nodes: str = "all"  # send the request to these nodes' addresses (the mesh must answer on each)
    status: int = 200
    headers: dict[str, str] = {}  # header → expected value (case-insensitive name, * globs in the value)
    body_contains: str | None = None
    timeout: Duration = 3.0


@check("http.get", HttpParams)
def http_get(ctx: CheckContext, p: HttpParams) -> Outcome:
    """GET http://<node ip>:<port><path> on each selected node; status, headers and body as expected."""
    observed: dict[str, object] = {}
    wrong = []
    for name in ctx.lab.select(p.nodes):
        url = f"http://{ctx.lab.node(name).ip}:{p.port}{p.path}"
        try:
            resp = ctx.target.http_get(url, p.timeout)
        except Exception as e:
            observed[name] = explain(e)
            wrong.append(f"{name}: {explain(e)}")
            continue
        observed[name] = resp.status
        headers = {k.lower(): v for k, v in resp.headers.items()}
        problems = []
        if resp.status != p.status:
            problems.append(f"status {resp.status}")
        for key, want in p.headers.items():
            got = headers.get(key.lower())
            if got is None or not fnmatch.fnmatchcase(got, want):
                problems.append(f"{key}: {got if got is not None else '(missing)'}")
        if p.body_contains is not None and p.body_contains not in resp.body:
            problems.append(f"body lacks {p.body_contains!r}")
        if problems:
            wrong.append(f"{name}: {', '.join(problems)}")
    if wrong:
        return Outcome(False, f"GET :{p.port}{p.path} " + "; ".join(wrong), observed)
    return Outcome(True, f"GET :{p.port}{p.path} answered {p.status} on {', '.join(observed)}", observed)
