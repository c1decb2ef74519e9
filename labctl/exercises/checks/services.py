"""Services as `docker service inspect` shows them: mode, replicas, image, placement, ports, update config."""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from labctl.exercises.checks.context import CheckContext, attrs_of, running
from labctl.exercises.checks.registry import Outcome, Params, check
from labctl.exercises.durations import Duration

NS = 1_000_000_000


class ServiceParams(Params):
    service: str


class ExistsParams(ServiceParams):
    absent: bool = False  # true: the service must NOT exist (e.g. after `docker service rm`)


@check("service.exists", ExistsParams)
def service_exists(ctx: CheckContext, p: ExistsParams) -> Outcome:
    """The service exists (or, with absent: true, does not)."""
    names = {str(attrs_of(s).get("Spec", {}).get("Name")) for s in ctx.services()}
    found = p.service in names
    if found != (not p.absent):
        return Outcome(False, f"service {p.service} {'exists' if found else 'does not exist'}", found)
    return Outcome(True, f"service {p.service} {'exists' if found else 'is gone'}", found)


def mode_of(spec: dict[str, Any]) -> str:
    mode = spec.get("Mode") or {}
    for key, name in (("Replicated", "replicated"), ("Global", "global"), ("ReplicatedJob", "replicated-job"),
                      ("GlobalJob", "global-job")):
        if key in mode:
            return name
    return "replicated"


class ModeParams(ServiceParams):
    mode: Literal["replicated", "global", "replicated-job", "global-job"]


@check("service.mode", ModeParams)
def service_mode(ctx: CheckContext, p: ModeParams) -> Outcome:
    """The service's mode (replicated, global, …)."""
    mode = mode_of(ctx.service_spec(p.service))
    return Outcome(mode == p.mode, f"{p.service} is {mode}" + ("" if mode == p.mode else f", expected {p.mode}"), mode)


class ReplicasParams(ServiceParams):
    replicas: int
    running: bool = True  # also require that many tasks running (the "2/2" of `docker service ls`)


@check("service.replicas", ReplicasParams)
def service_replicas(ctx: CheckContext, p: ReplicasParams) -> Outcome:
    """Desired replicas equal `replicas`, and (by default) that many tasks run."""
    spec = ctx.service_spec(p.service)
    desired = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")
    n_running = sum(1 for t in ctx.tasks(p.service) if running(t)) if p.running else None
    observed = {"desired": desired, "running": n_running}
    shown = f"{n_running}/{desired}" if p.running else f"{desired} desired"
    if desired != p.replicas:
        return Outcome(False, f"{p.service} wants {desired} replicas, expected {p.replicas} ({shown})", observed)
    if p.running and n_running != p.replicas:
        return Outcome(False, f"{p.service} runs {shown} replicas", observed)
    return Outcome(True, f"{p.service} runs {shown}", observed)


def image_matches(actual: str, expected: str) -> bool:
    """`nginx` matches `nginx:latest@sha256:…`, `nginx:1.25` matches `nginx:1.25@sha256:…`; globs allowed."""
    def norm(image: str) -> str:
        image = image.split("@", 1)[0]
        if ":" not in image.rsplit("/", 1)[-1]:
            image += ":latest"
        for prefix in ("docker.io/library/", "docker.io/"):
            image = image.removeprefix(prefix)
        return image

    ref, expected = norm(actual), norm(expected)
    return fnmatch.fnmatchcase(ref, expected)


class ImageParams(ServiceParams):
    image: str  # e.g. nginx:1.25 (a digest on the service is ignored; * globs allowed)


@check("service.image", ImageParams)
def service_image(ctx: CheckContext, p: ImageParams) -> Outcome:
    """The service's image (tag compared, digest ignored)."""
    image = str(ctx.service_spec(p.service).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))
    ok = image_matches(image, p.image)
    return Outcome(ok, f"{p.service} uses {image or 'no image'}" + ("" if ok else f", expected {p.image}"), image)


def _norm_constraint(c: str) -> str:
    return "".join(c.split())


class ConstraintsParams(ServiceParams):
    contains: list[str] = []  # these constraints must be present (spacing ignored)
    absent: list[str] = []  # these must not be
    exact: bool = False  # no constraints other than `contains`


@check("service.constraints", ConstraintsParams)
def service_constraints(ctx: CheckContext, p: ConstraintsParams) -> Outcome:
    """Placement constraints present/absent (`node.role==worker`, `node.labels.zone==a`)."""
    placement = ctx.service_spec(p.service).get("TaskTemplate", {}).get("Placement") or {}
    have = [str(c) for c in placement.get("Constraints") or []]
    norm = {_norm_constraint(c) for c in have}
    missing = [c for c in p.contains if _norm_constraint(c) not in norm]
    extra = [c for c in p.absent if _norm_constraint(c) in norm]
    if p.exact:
        wanted = {_norm_constraint(c) for c in p.contains}
        extra += [c for c in have if _norm_constraint(c) not in wanted]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        return Outcome(False, f"{p.service} constraints: {'; '.join(parts)} (has: {', '.join(have) or 'none'})", have)
    return Outcome(True, f"{p.service} constraints: {', '.join(have) or 'none'}", have)


class PortParams(ServiceParams):
    published: int
    target: int | None = None
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    mode: Literal["ingress", "host"] | None = None


@check("service.ports", PortParams)
def service_ports(ctx: CheckContext, p: PortParams) -> Outcome:
    """The service publishes a port (`-p published:target`), optionally in a given mode."""
    svc = ctx.service(p.service)
    attrs = svc.attrs if hasattr(svc, "attrs") else svc
    ports = (attrs.get("Endpoint") or {}).get("Ports") or (attrs.get("Spec", {}).get("EndpointSpec") or {}).get("Ports") or []
    shown = [f"{q.get('PublishedPort')}:{q.get('TargetPort')}/{q.get('Protocol', 'tcp')} ({q.get('PublishMode', 'ingress')})"
             for q in ports]
    for q in ports:
        if (q.get("PublishedPort") == p.published and q.get("Protocol", "tcp") == p.protocol
                and (p.target is None or q.get("TargetPort") == p.target)
                and (p.mode is None or q.get("PublishMode", "ingress") == p.mode)):
            return Outcome(True, f"{p.service} publishes {shown[ports.index(q)]}", shown)
    want = f"{p.published}{':' + str(p.target) if p.target else ''}/{p.protocol}"
    return Outcome(False, f"{p.service} does not publish {want} (publishes: {', '.join(shown) or 'nothing'})", shown)


class UpdateConfigParams(ServiceParams):
    parallelism: int | None = None
    delay: Duration | None = None
    failure_action: Literal["pause", "continue", "rollback"] | None = None
    monitor: Duration | None = None
    max_failure_ratio: float | None = None
    order: Literal["stop-first", "start-first"] | None = None
    rollback: bool = False  # compare RollbackConfig instead of UpdateConfig


@check("service.update_config", UpdateConfigParams)
def service_update_config(ctx: CheckContext, p: UpdateConfigParams) -> Outcome:
    """The service's update (or rollback) config: parallelism, delay, failure action, monitor, order."""
    key = "RollbackConfig" if p.rollback else "UpdateConfig"
    cfg = ctx.service_spec(p.service).get(key) or {}
    actual: dict[str, Any] = {
        "parallelism": cfg.get("Parallelism", 1),
        "delay": (cfg.get("Delay") or 0) / NS,
        "failure_action": cfg.get("FailureAction", "pause"),
        "monitor": (cfg.get("Monitor") or 5 * NS) / NS,
        "max_failure_ratio": cfg.get("MaxFailureRatio", 0),
        "order": cfg.get("Order", "stop-first"),
    }
    wrong = []
    for field in actual:
        want = getattr(p, field)
        if want is not None and actual[field] != want:
            wrong.append(f"{field} is {actual[field]:g}" if isinstance(actual[field], float) else f"{field} is {actual[field]}")
            wrong[-1] += f", expected {want:g}" if isinstance(want, float) else f", expected {want}"
    what = "rollback config" if p.rollback else "update config"
    if wrong:
        return Outcome(False, f"{p.service} {what}: " + "; ".join(wrong), actual)
    return Outcome(True, f"{p.service} {what} as expected", actual)
