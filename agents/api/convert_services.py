"""Docker JSON <-> the store's Service/Task objects (moby's ``daemon/cluster/convert/service.go``/``task.go``).

Parsing is strict about types (a string where Docker wants nanoseconds is a 400 naming the field) and
lenient about unknown keys (Go ignores them, and the CLI sends fields we do not model, e.g. ``DNSConfig``).
Enum texts and error messages follow dockerd's converter (``invalid RestartCondition: "x"``...);
semantic checks with SwarmKit's texts live in ``agents.state.validate``. Output mirrors what dockerd
prints for a service created by the CLI: the stored values are always present (the CLI always sends
them), ``omitempty`` fields are left out when empty, timestamps are Go's RFC 3339 with nanoseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.api.convert import go_time
from agents.api.errors import InvalidParameter
from agents.api.httputil import expect_type, optional_field
from agents.state.objects import (
    SECOND,
    ContainerSpec,
    Driver,
    Endpoint,
    EndpointSpec,
    FailureAction,
    NetworkAttachment,
    NetworkAttachmentConfig,
    Placement,
    PlacementPreference,
    Platform,
    PortConfig,
    PortProtocol,
    PublishMode,
    ResolutionMode,
    ResourceRequirements,
    Resources,
    RestartCondition,
    RestartPolicy,
    SecretReference,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskSpec,
    UpdateConfig,
    UpdateOrder,
    UpdateStatus,
)

JSON = dict[str, Any]


# --------------------------------------------------------------------------------------------- time


def version_json(index: int) -> JSON:
    return {"Index": index}


# ------------------------------------------------------------------------------------ parse helpers


class _Fields(dict[str, Any]):
    """A JSON object whose keys match case-insensitively, as Go's ``encoding/json`` matches struct
    fields (the docker SDK sends ``{"replicated": {...}}`` where the CLI sends ``Replicated``)."""

    def _key(self, key: str) -> str:
        if dict.__contains__(self, key):
            return key
        lower = key.lower()
        return next((k for k in self if k.lower() == lower), key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(self._key(key), default)

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key) if isinstance(key, str) else key)


def fields(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return data if isinstance(data, _Fields) else _Fields(data)


def _obj(data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    found = optional_field(data, key, dict, path=path)
    return None if found is None else fields(found)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(data: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    return optional_field(data, key, str, default, path=path)


def _uint(data: Mapping[str, Any], key: str, path: str, default: int = 0) -> int:
    """A Go unsigned integer: 400 when negative or not an integer (``1.0`` is accepted as 1)."""
    value = data.get(key)
    if value is None:
        return default
    number: float = expect_type(value, (int, float), _join(path, key))
    if number != int(number) or number < 0:
        raise InvalidParameter(f"invalid JSON: {_join(path, key)} must be a non-negative integer, got {value}")
    return int(number)


def _int(data: Mapping[str, Any], key: str, path: str, default: int = 0) -> int:
    """A signed integer such as a duration in nanoseconds (negatives are for the validator to refuse)."""
    value = data.get(key)
    if value is None:
        return default
    number: float = expect_type(value, (int, float), _join(path, key))
    if number != int(number):
        raise InvalidParameter(f"invalid JSON: {_join(path, key)} must be an integer, got {value}")
    return int(number)


def _str_list(data: Mapping[str, Any], key: str, path: str) -> list[str]:
    items = optional_field(data, key, list, [], path=path)
    return [expect_type(v, str, f"{_join(path, key)}[{i}]") for i, v in enumerate(items)]


def _str_map(data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    items = optional_field(data, key, dict, {}, path=path)
    return {k: expect_type(v, str, f"{_join(path, key)}.{k}") for k, v in items.items()}


def _objects(data: Mapping[str, Any], key: str, path: str) -> list[tuple[Mapping[str, Any], str]]:
    items = optional_field(data, key, list, [], path=path)
    out: list[tuple[Mapping[str, Any], str]] = []
    for i, v in enumerate(items):
        where = f"{_join(path, key)}[{i}]"
        out.append((fields(expect_type(v, dict, where)), where))
    return out


# ------------------------------------------------------------------------------------------- parse


def parse_service_spec(data: Mapping[str, Any]) -> ServiceSpec:
    """A ServiceSpec body -> ``ServiceSpec`` (the name may be empty: the caller picks a random one)."""
    data = fields(data)
    spec = ServiceSpec(
        name=_str(data, "Name", ""),
        labels=_str_map(data, "Labels", ""),
        task_template=parse_task_spec(_obj(data, "TaskTemplate", "") or {}, "TaskTemplate"),
    )
    _parse_mode(_obj(data, "Mode", "") or {}, spec)
    spec.update_config = parse_update_config(_obj(data, "UpdateConfig", "") or {}, "UpdateConfig", rollback=False)
    spec.rollback_config = parse_update_config(
        _obj(data, "RollbackConfig", "") or {}, "RollbackConfig", rollback=True
    )
    endpoint = _obj(data, "EndpointSpec", "")
    if endpoint is not None:
        spec.endpoint_spec = parse_endpoint_spec(endpoint, "EndpointSpec")
    # The deprecated service-level Networks still work in dockerd: they join the task's networks.
    for n, where in _objects(data, "Networks", ""):
        spec.task_template.networks.append(_network(n, where))
    return spec


_MODES = ("Replicated", "Global", "ReplicatedJob", "GlobalJob")


def _parse_mode(mode: Mapping[str, Any], spec: ServiceSpec) -> None:
    canonical = {m.lower() for m in _MODES}
    unknown = [k for k in mode if k.lower() not in canonical]
    if unknown:
        raise InvalidParameter(
            f"invalid JSON: unknown service mode {unknown[0]!r} (expected one of {', '.join(_MODES)})"
        )
    given = [k for k in _MODES if mode.get(k) is not None]  # case-insensitive (see _Fields)
    if len(given) > 1:
        raise InvalidParameter("must specify only one service mode")
    kind = given[0] if given else "Replicated"
    body = _obj(mode, kind, "Mode") or {}
    where = f"Mode.{kind}"
    if kind == "Global":
        spec.mode = ServiceMode.GLOBAL
    elif kind == "GlobalJob":
        spec.mode = ServiceMode.GLOBAL_JOB
    elif kind == "ReplicatedJob":
        spec.mode = ServiceMode.REPLICATED_JOB
        spec.max_concurrent = _uint(body, "MaxConcurrent", where, 1)
        spec.total_completions = _uint(body, "TotalCompletions", where, spec.max_concurrent)
    else:
        spec.mode = ServiceMode.REPLICATED
        spec.replicas = _uint(body, "Replicas", where, 1)


def parse_task_spec(data: Mapping[str, Any], path: str) -> TaskSpec:
    runtime = _str(data, "Runtime", path)
    if runtime not in ("", "container"):
        raise InvalidParameter("unsupported runtime")
    container = _obj(data, "ContainerSpec", path)
    if container is None:
        raise InvalidParameter("mismatched Runtime and *Spec fields")
    ts = TaskSpec(container=_container_spec(container, _join(path, "ContainerSpec")))
    resources = _obj(data, "Resources", path)
    if resources is not None:
        ts.resources = _resources(resources, _join(path, "Resources"))
    restart = _obj(data, "RestartPolicy", path)
    if restart is not None:
        ts.restart_policy = _restart_policy(restart, _join(path, "RestartPolicy"))
    placement = _obj(data, "Placement", path)
    if placement is not None:
        ts.placement = _placement(placement, _join(path, "Placement"))
    ts.networks = [_network(n, where) for n, where in _objects(data, "Networks", path)]
    ts.force_update = _uint(data, "ForceUpdate", path)
    log_driver = _obj(data, "LogDriver", path)
    if log_driver is not None:
        where = _join(path, "LogDriver")
        ts.log_driver = Driver(_str(log_driver, "Name", where), _str_map(log_driver, "Options", where))
    return ts


def _container_spec(data: Mapping[str, Any], path: str) -> ContainerSpec:
    return ContainerSpec(
        image=_str(data, "Image", path),
        command=_str_list(data, "Command", path),
        args=_str_list(data, "Args", path),
        env=_str_list(data, "Env", path),
        hostname=_str(data, "Hostname", path),
        dir=_str(data, "Dir", path),
        user=_str(data, "User", path),
        labels=_str_map(data, "Labels", path),
        secrets=[_secret_ref(s, where) for s, where in _objects(data, "Secrets", path)],
        stop_grace_period=_int(data, "StopGracePeriod", path, 10 * SECOND),
        stop_signal=_str(data, "StopSignal", path),
    )


def _secret_ref(data: Mapping[str, Any], path: str) -> SecretReference:
    ref = SecretReference(secret_id=_str(data, "SecretID", path), secret_name=_str(data, "SecretName", path))
    file = _obj(data, "File", path)
    if file is not None:
        where = _join(path, "File")
        ref.file_name = _str(file, "Name", where)
        ref.uid = _str(file, "UID", where, "0")
        ref.gid = _str(file, "GID", where, "0")
        ref.mode = _uint(file, "Mode", where, 0o444)
    return ref


def _resources(data: Mapping[str, Any], path: str) -> ResourceRequirements:
    out = ResourceRequirements()
    for key, target in (("Limits", out.limits), ("Reservations", out.reservations)):
        part = _obj(data, key, path)
        if part is not None:
            where = _join(path, key)
            target.nano_cpus = _uint(part, "NanoCPUs", where)
            target.memory_bytes = _uint(part, "MemoryBytes", where)
    return out


_CONDITIONS = {c.value: c for c in RestartCondition}


def _restart_policy(data: Mapping[str, Any], path: str) -> RestartPolicy:
    condition = _str(data, "Condition", path)
    if condition and condition not in _CONDITIONS:
        raise InvalidParameter(f'invalid RestartCondition: "{condition}"')
    rp = RestartPolicy(condition=_CONDITIONS.get(condition, RestartCondition.ANY))
    rp.delay = _int(data, "Delay", path, rp.delay)
    rp.max_attempts = _uint(data, "MaxAttempts", path)
    rp.window = _int(data, "Window", path)
    return rp


def _placement(data: Mapping[str, Any], path: str) -> Placement:
    out = Placement(constraints=_str_list(data, "Constraints", path), max_replicas=_uint(data, "MaxReplicas", path))
    for pref, where in _objects(data, "Preferences", path):
        spread = _obj(pref, "Spread", where)
        if spread is not None:
            out.preferences.append(PlacementPreference(_str(spread, "SpreadDescriptor", _join(where, "Spread"))))
    for plat, where in _objects(data, "Platforms", path):
        out.platforms.append(Platform(os=_str(plat, "OS", where), architecture=_str(plat, "Architecture", where)))
    return out


def _network(data: Mapping[str, Any], path: str) -> NetworkAttachmentConfig:
    target = _str(data, "Target", path)
    if not target:
        raise InvalidParameter(f"invalid JSON: {path}.Target is required")
    return NetworkAttachmentConfig(target=target, aliases=_str_list(data, "Aliases", path))


_FAILURE_ACTIONS = {a.value: a for a in FailureAction}
_ORDERS = {o.value: o for o in UpdateOrder}


def parse_update_config(data: Mapping[str, Any], path: str, *, rollback: bool) -> UpdateConfig:
    uc = UpdateConfig()
    uc.parallelism = _uint(data, "Parallelism", path, 1 if not data else 0)
    uc.delay = _int(data, "Delay", path)
    action = _str(data, "FailureAction", path)
    if action and (action not in _FAILURE_ACTIONS or (rollback and action == "rollback")):
        raise InvalidParameter(f"unrecognized update failure action {action}")
    uc.failure_action = _FAILURE_ACTIONS.get(action, FailureAction.PAUSE)
    uc.monitor = _int(data, "Monitor", path, uc.monitor)
    ratio = optional_field(data, "MaxFailureRatio", float, 0.0, path=path)
    uc.max_failure_ratio = float(ratio)
    order = _str(data, "Order", path)
    if order and order not in _ORDERS:
        raise InvalidParameter(f"unrecognized update order {order}")
    uc.order = _ORDERS.get(order, UpdateOrder.STOP_FIRST)
    return uc


_PROTOCOLS = {p.value: p for p in PortProtocol}
_PUBLISH_MODES = {m.value: m for m in PublishMode}


def parse_endpoint_spec(data: Mapping[str, Any], path: str) -> EndpointSpec:
    mode = _str(data, "Mode", path)
    if mode not in ("", "vip", "dnsrr"):
        raise InvalidParameter(f'invalid resolution mode: "{mode}"')
    es = EndpointSpec(mode=ResolutionMode.DNSRR if mode == "dnsrr" else ResolutionMode.VIP)
    for port, where in _objects(data, "Ports", path):
        protocol = _str(port, "Protocol", where)
        if protocol and protocol not in _PROTOCOLS:
            raise InvalidParameter(f'invalid protocol: "{protocol}" (expected tcp, udp or sctp)')
        publish_mode = _str(port, "PublishMode", where)
        if publish_mode and publish_mode not in _PUBLISH_MODES:
            raise InvalidParameter(f'invalid publish mode: "{publish_mode}" (expected ingress or host)')
        pc = PortConfig(
            name=_str(port, "Name", where),
            protocol=_PROTOCOLS.get(protocol, PortProtocol.TCP),
            target_port=_uint(port, "TargetPort", where),
            published_port=_uint(port, "PublishedPort", where),
            publish_mode=_PUBLISH_MODES.get(publish_mode, PublishMode.INGRESS),
        )
        for key, value in (("TargetPort", pc.target_port), ("PublishedPort", pc.published_port)):
            if value > 65535:
                raise InvalidParameter(f"invalid JSON: {where}.{key} must be at most 65535, got {value}")
        es.ports.append(pc)
    return es


# ------------------------------------------------------------------------------------------ output


def _put(out: JSON, key: str, value: Any) -> None:
    """Go's ``omitempty``: leave out empty strings, lists, maps and zero numbers."""
    if value:
        out[key] = value


def container_spec_json(spec: TaskSpec) -> JSON:
    c = spec.container
    out: JSON = {}
    _put(out, "Image", c.image)
    _put(out, "Labels", dict(c.labels))
    _put(out, "Command", list(c.command))
    _put(out, "Args", list(c.args))
    _put(out, "Hostname", c.hostname)
    _put(out, "Env", list(c.env))
    _put(out, "Dir", c.dir)
    _put(out, "User", c.user)
    _put(out, "StopSignal", c.stop_signal)
    out["StopGracePeriod"] = c.stop_grace_period
    out["DNSConfig"] = {}
    if c.secrets:
        out["Secrets"] = [
            {
                "File": {"Name": s.file_name, "UID": s.uid, "GID": s.gid, "Mode": s.mode},
                "SecretID": s.secret_id,
                "SecretName": s.secret_name,
            }
            for s in c.secrets
        ]
    out["Isolation"] = "default"
    return out


def _resources_json(r: Resources) -> JSON:
    out: JSON = {}
    _put(out, "NanoCPUs", r.nano_cpus)
    _put(out, "MemoryBytes", r.memory_bytes)
    return out


def task_spec_json(spec: TaskSpec) -> JSON:
    rp = spec.restart_policy
    restart: JSON = {"Condition": rp.condition.value, "Delay": rp.delay, "MaxAttempts": rp.max_attempts}
    _put(restart, "Window", rp.window)
    placement: JSON = {}
    _put(placement, "Constraints", list(spec.placement.constraints))
    _put(
        placement,
        "Preferences",
        [{"Spread": {"SpreadDescriptor": p.spread_descriptor}} for p in spec.placement.preferences],
    )
    _put(placement, "MaxReplicas", spec.placement.max_replicas)
    _put(
        placement,
        "Platforms",
        [{"Architecture": p.architecture, "OS": p.os} for p in spec.placement.platforms],
    )
    out: JSON = {
        "ContainerSpec": container_spec_json(spec),
        "Resources": {
            "Limits": _resources_json(spec.resources.limits),
            "Reservations": _resources_json(spec.resources.reservations),
        },
        "RestartPolicy": restart,
        "Placement": placement,
    }
    if spec.networks:
        out["Networks"] = [_network_json(n) for n in spec.networks]
    if spec.log_driver is not None:
        out["LogDriver"] = {"Name": spec.log_driver.name, "Options": dict(spec.log_driver.options)}
    out["ForceUpdate"] = spec.force_update
    out["Runtime"] = "container"
    return out


def _network_json(n: NetworkAttachmentConfig) -> JSON:
    out: JSON = {"Target": n.target}
    _put(out, "Aliases", list(n.aliases))
    return out


def update_config_json(uc: UpdateConfig) -> JSON:
    out: JSON = {"Parallelism": uc.parallelism}
    _put(out, "Delay", uc.delay)
    out["FailureAction"] = uc.failure_action.value
    _put(out, "Monitor", uc.monitor)
    out["MaxFailureRatio"] = uc.max_failure_ratio
    out["Order"] = uc.order.value
    return out


def port_json(p: PortConfig) -> JSON:
    out: JSON = {}
    _put(out, "Name", p.name)
    out["Protocol"] = p.protocol.value
    out["TargetPort"] = p.target_port
    out["PublishedPort"] = p.published_port
    out["PublishMode"] = p.publish_mode.value
    return out


def endpoint_spec_json(es: EndpointSpec) -> JSON:
    out: JSON = {"Mode": es.mode.value}
    _put(out, "Ports", [port_json(p) for p in es.ports])
    return out


def mode_json(spec: ServiceSpec) -> JSON:
    if spec.mode is ServiceMode.GLOBAL:
        return {"Global": {}}
    if spec.mode is ServiceMode.GLOBAL_JOB:
        return {"GlobalJob": {}}
    if spec.mode is ServiceMode.REPLICATED_JOB:
        return {"ReplicatedJob": {"MaxConcurrent": spec.max_concurrent, "TotalCompletions": spec.total_completions}}
    return {"Replicated": {"Replicas": spec.replicas}}


def service_spec_json(spec: ServiceSpec) -> JSON:
    return {
        "Name": spec.name,
        "Labels": dict(spec.labels),
        "TaskTemplate": task_spec_json(spec.task_template),
        "Mode": mode_json(spec),
        "UpdateConfig": update_config_json(spec.update_config),
        "RollbackConfig": update_config_json(spec.rollback_config),
        "EndpointSpec": endpoint_spec_json(spec.endpoint_spec),
    }


def endpoint_json(svc: Service) -> JSON:
    ep = svc.endpoint
    if ep is None:
        ep = Endpoint(spec=svc.spec.endpoint_spec)
    out: JSON = {"Spec": endpoint_spec_json(ep.spec)}
    _put(out, "Ports", [port_json(p) for p in ep.ports])
    _put(out, "VirtualIPs", [{"NetworkID": v.network_id, "Addr": v.addr} for v in ep.virtual_ips])
    return out


def update_status_json(us: UpdateStatus) -> JSON:
    out: JSON = {"State": us.state.value}
    if us.started_at > 0:
        out["StartedAt"] = go_time(us.started_at)
    if us.completed_at > 0:
        out["CompletedAt"] = go_time(us.completed_at)
    out["Message"] = us.message
    return out


def service_json(svc: Service) -> JSON:
    """The Service object of ``GET /services/{id}`` (and of the list)."""
    out: JSON = {
        "ID": svc.id,
        "Version": version_json(svc.meta.version),
        "CreatedAt": go_time(svc.meta.created_at),
        "UpdatedAt": go_time(svc.meta.updated_at),
        "Spec": service_spec_json(svc.spec),
    }
    if svc.previous_spec is not None:
        out["PreviousSpec"] = service_spec_json(svc.previous_spec)
    out["Endpoint"] = endpoint_json(svc)
    if svc.update_status is not None:
        out["UpdateStatus"] = update_status_json(svc.update_status)
    return out


def _attachment_json(a: NetworkAttachment, networks: Mapping[str, JSON]) -> JSON:
    return {"Network": networks.get(a.network_id, {"ID": a.network_id}), "Addresses": list(a.addresses)}


def task_json(task: Task, networks: Mapping[str, JSON] | None = None) -> JSON:
    """The Task object of ``GET /tasks/{id}``; ``networks`` maps network ids to their JSON (optional)."""
    st = task.status
    status: JSON = {"Timestamp": go_time(st.timestamp), "State": str(st.state)}
    _put(status, "Message", st.message)
    _put(status, "Err", st.err)
    if st.container_status is not None:
        cs: JSON = {}
        _put(cs, "ContainerID", st.container_status.container_id)
        _put(cs, "PID", st.container_status.pid)
        _put(cs, "ExitCode", st.container_status.exit_code)
        status["ContainerStatus"] = cs
    status["PortStatus"] = (
        {"Ports": [port_json(p) for p in st.port_status.ports]} if st.port_status and st.port_status.ports else {}
    )
    out: JSON = {
        "ID": task.id,
        "Version": version_json(task.meta.version),
        "CreatedAt": go_time(task.meta.created_at),
        "UpdatedAt": go_time(task.meta.updated_at),
        "Labels": dict(task.annotations.labels),
        "Spec": task_spec_json(task.spec),
        "ServiceID": task.service_id,
    }
    _put(out, "Name", task.annotations.name)
    _put(out, "Slot", task.slot)
    _put(out, "NodeID", task.node_id)
    out["Status"] = status
    out["DesiredState"] = str(task.desired_state)
    if task.networks:
        nets = networks or {}
        out["NetworksAttachments"] = [_attachment_json(a, nets) for a in task.networks]
    if task.assigned_generic_resources:
        out["AssignedGenericResources"] = [
            {"NamedResourceSpec": {"Kind": g.kind, "Value": g.value}}
            if g.value
            else {"DiscreteResourceSpec": {"Kind": g.kind, "Value": g.discrete}}
            for g in task.assigned_generic_resources
        ]
    return out
