"""Store objects -> the Docker API's JSON for swarms, nodes, secrets and networks.

Shapes follow moby's ``api/types/swarm`` structs as dockerd 26 encodes them (``daemon/cluster/convert``):
``omitempty`` fields are left out when empty, ``Labels`` maps are always present, timestamps are Go's
RFC 3339 with nanoseconds, ``[]byte`` fields are standard base64. Nothing here emits the CA key, the
unlock key or secret data: callers pass store objects and get only what Docker shows.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import hashlib
from typing import Any

from agents.pki import der
from agents.state.objects import (
    Cluster,
    ClusterSpec,
    Meta,
    Network,
    Node,
    NodeRole,
    Secret,
)

JSON = dict[str, Any]

ZERO_TIME = "0001-01-01T00:00:00Z"
DEFAULT_ADDR_POOL = ["10.0.0.0/8"]
DEFAULT_SUBNET_SIZE = 24
DATA_PATH_PORT = 4789
ENGINE_PLUGINS = [
    {"Type": "Log", "Name": "json-file"},
    {"Type": "Log", "Name": "local"},
    {"Type": "Network", "Name": "bridge"},
    {"Type": "Network", "Name": "host"},
    {"Type": "Network", "Name": "null"},
    {"Type": "Network", "Name": "overlay"},
    {"Type": "Volume", "Name": "local"},
]
"""What a node's engine reports under Description.Engine.Plugins (matches /info's Plugins)."""


def go_time(ts: float) -> str:
    """Epoch seconds as Go's RFC 3339 with nanoseconds (trailing zeros trimmed), UTC."""
    if ts <= 0:
        return ZERO_TIME
    ns = round(ts * 1_000_000_000)
    sec, frac = divmod(ns, 1_000_000_000)
    base = _dt.datetime.fromtimestamp(sec, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def meta_json(meta: Meta) -> JSON:
    """Version/CreatedAt/UpdatedAt, as moby's embedded ``swarm.Meta``."""
    return {
        "Version": {"Index": meta.version},
        "CreatedAt": go_time(meta.created_at),
        "UpdatedAt": go_time(meta.updated_at),
    }


# ----------------------------------------------------------------------------------------------- TLS


@functools.lru_cache(maxsize=8)
def tls_info(ca_cert_pem: bytes) -> JSON:
    """TLSInfo of a root CA: the PEM plus the issuer's raw subject and public key (base64, as Go's []byte)."""
    if not ca_cert_pem:
        return {}
    cert = der.parse_certificate(der.pem_to_der(ca_cert_pem))
    return {
        "TrustRoot": ca_cert_pem.decode(),
        "CertIssuerSubject": base64.b64encode(cert.subject_der).decode(),
        "CertIssuerPublicKey": base64.b64encode(cert.spki_der).decode(),
    }


# ------------------------------------------------------------------------------------------- swarm


def swarm_spec_json(spec: ClusterSpec) -> JSON:
    out: JSON = {"Name": spec.name, "Labels": dict(spec.labels)}
    out["Orchestration"] = {"TaskHistoryRetentionLimit": spec.orchestration.task_history_retention_limit}
    raft = spec.raft
    raft_json: JSON = {"SnapshotInterval": raft.snapshot_interval, "KeepOldSnapshots": raft.keep_old_snapshots}
    if raft.log_entries_for_slow_followers:
        raft_json["LogEntriesForSlowFollowers"] = raft.log_entries_for_slow_followers
    raft_json["ElectionTick"] = raft.election_tick
    raft_json["HeartbeatTick"] = raft.heartbeat_tick
    out["Raft"] = raft_json
    out["Dispatcher"] = {"HeartbeatPeriod": spec.dispatcher.heartbeat_period} if spec.dispatcher.heartbeat_period else {}
    out["CAConfig"] = {"NodeCertExpiry": spec.ca_config.node_cert_expiry} if spec.ca_config.node_cert_expiry else {}
    ld = spec.task_defaults.log_driver
    out["TaskDefaults"] = {"LogDriver": _driver_json(ld.name, ld.options)} if ld is not None else {}
    out["EncryptionConfig"] = {"AutoLockManagers": spec.encryption_config.auto_lock_managers}
    return out


def _driver_json(name: str, options: dict[str, str]) -> JSON:
    out: JSON = {"Name": name}
    if options:
        out["Options"] = dict(options)
    return out


def cluster_info_json(cluster: Cluster) -> JSON:
    """ClusterInfo (the Swarm object without JoinTokens; also /info's Swarm.Cluster)."""
    return {
        "ID": cluster.id,
        **meta_json(cluster.meta),
        "Spec": swarm_spec_json(cluster.spec),
        "TLSInfo": tls_info(cluster.root_ca.ca_cert_pem),
        "RootRotationInProgress": False,
        "DefaultAddrPool": list(DEFAULT_ADDR_POOL),
        "SubnetSize": DEFAULT_SUBNET_SIZE,
        "DataPathPort": DATA_PATH_PORT,
    }


def swarm_json(cluster: Cluster) -> JSON:
    """GET /swarm: ClusterInfo plus the join tokens (managers only ever call this)."""
    tokens = cluster.root_ca.join_tokens
    return {**cluster_info_json(cluster), "JoinTokens": {"Worker": tokens.worker, "Manager": tokens.manager}}


# -------------------------------------------------------------------------------------------- nodes


def node_json(node: Node, cluster: Cluster | None = None) -> JSON:
    """A Node as ``docker node inspect`` shows it; TLSInfo comes from the cluster's root CA."""
    spec: JSON = {}
    if node.spec.name:
        spec["Name"] = node.spec.name
    spec["Labels"] = dict(node.spec.labels)
    spec["Role"] = node.spec.role.value
    spec["Availability"] = node.spec.availability.value

    d = node.description
    desc: JSON = {}
    if d.hostname:
        desc["Hostname"] = d.hostname
    platform = {k: v for k, v in (("Architecture", d.platform.architecture), ("OS", d.platform.os)) if v}
    desc["Platform"] = platform
    resources = {k: v for k, v in (("NanoCPUs", d.resources.nano_cpus), ("MemoryBytes", d.resources.memory_bytes)) if v}
    desc["Resources"] = resources
    engine: JSON = {}
    if d.engine.engine_version:
        engine["EngineVersion"] = d.engine.engine_version
    if d.engine.labels:
        engine["Labels"] = dict(d.engine.labels)
    engine["Plugins"] = [dict(p) for p in ENGINE_PLUGINS]
    desc["Engine"] = engine
    if d.tls_info.trust_root:
        desc["TLSInfo"] = {
            "TrustRoot": d.tls_info.trust_root.decode(),
            "CertIssuerSubject": base64.b64encode(d.tls_info.cert_issuer_subject).decode(),
            "CertIssuerPublicKey": base64.b64encode(d.tls_info.cert_issuer_public_key).decode(),
        }
    elif cluster is not None:
        desc["TLSInfo"] = tls_info(cluster.root_ca.ca_cert_pem)

    status: JSON = {"State": node.status.state.value}
    if node.status.message:
        status["Message"] = node.status.message
    if node.status.addr:
        status["Addr"] = node.status.addr

    out: JSON = {"ID": node.id, **meta_json(node.meta), "Spec": spec, "Description": desc, "Status": status}
    ms = node.manager_status
    # Only a Raft voter has a ManagerStatus (SwarmKit derives it from the Raft member list): a node being
    # promoted has its Raft id already, but shows no manager status until it has caught up and votes.
    if ms is not None and node.role is NodeRole.MANAGER:
        mjson: JSON = {}
        if ms.leader:
            mjson["Leader"] = True
        mjson["Reachability"] = ms.reachability.value
        if ms.addr:
            mjson["Addr"] = ms.addr
        out["ManagerStatus"] = mjson
    return out


# ------------------------------------------------------------------------------------------ secrets


def secret_json(secret: Secret) -> JSON:
    """A Secret without its data (Docker never returns it)."""
    spec: JSON = {"Name": secret.spec.name, "Labels": dict(secret.spec.labels)}
    if secret.spec.driver is not None:
        spec["Driver"] = _driver_json(secret.spec.driver.name, secret.spec.driver.options)
    return {"ID": secret.id, **meta_json(secret.meta), "Spec": spec}


# ----------------------------------------------------------------------------------------- networks


def cluster_network_json(net: Network) -> JSON:
    """A swarm-scoped network in the ``/networks`` shape (moby's ``convert.BasicNetworkFromGRPC``)."""
    spec = net.spec
    ipam_config: list[JSON] = []
    for c in spec.ipam:
        entry: JSON = {"Subnet": c.subnet}
        if c.ip_range:
            entry["IPRange"] = c.ip_range
        if c.gateway:
            entry["Gateway"] = c.gateway
        ipam_config.append(entry)
    alloc = net.allocated
    if not ipam_config and alloc is not None and alloc.subnet:
        entry = {"Subnet": alloc.subnet}
        if alloc.gateway:
            entry["Gateway"] = alloc.gateway
        ipam_config.append(entry)
    options = dict(spec.driver_opts)
    if alloc is not None:
        options.update(alloc.driver_state.options)
    return {
        "Name": spec.name,
        "Id": net.id,
        "Created": go_time(net.meta.created_at),
        "Scope": "swarm",
        "Driver": spec.driver or "overlay",
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": ipam_config},
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": options,
        "Labels": dict(spec.labels),
    }


def attached_network_json(net_id: str, name: str, vni: int, subnet: str, gateway: str, ingress: bool,
                          created: float) -> JSON:
    """A swarm network as a worker lists it (from the routing-mesh table it was sent): what dockerd's
    libnetwork has for an overlay network this node takes part in."""
    config: JSON = {"Subnet": subnet}
    if gateway:
        config["Gateway"] = gateway
    return {
        "Name": name,
        "Id": net_id,
        "Created": go_time(created),
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": [config] if subnet else []},
        "Internal": False,
        "Attachable": False,
        "Ingress": ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": str(vni)} if vni else {},
        "Labels": {},
    }


LOCAL_NETWORKS: tuple[tuple[str, str, list[JSON], dict[str, str]], ...] = (
    (
        "bridge",
        "bridge",
        [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}],
        {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": "docker0",
            "com.docker.network.driver.mtu": "1500",
        },
    ),
    ("host", "host", [], {}),
    ("none", "null", [], {}),
)
"""The networks every Docker engine has: name, driver, IPAM config, options."""

GWBRIDGE = (
    "docker_gwbridge",
    "bridge",
    [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}],
    {
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "true",
        "com.docker.network.bridge.name": "docker_gwbridge",
    },
)
"""The bridge a node gets once it is in a swarm (its containers' way out of overlay networks)."""

PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default"})
"""Docker's ``runconfig.IsPreDefinedNetwork`` names."""


def local_network_id(engine_id: str, name: str) -> str:
    """A stable 64-hex id for a node-local network (same on every call, different per engine)."""
    return hashlib.sha256(f"{engine_id}/{name}".encode()).hexdigest()


def local_networks(engine_id: str, created: float, in_swarm: bool) -> list[JSON]:
    """bridge, host, none (and docker_gwbridge in a swarm) in the ``/networks`` shape."""
    defs = [*LOCAL_NETWORKS, GWBRIDGE] if in_swarm else list(LOCAL_NETWORKS)
    out = []
    for name, driver, config, options in defs:
        out.append({
            "Name": name,
            "Id": local_network_id(engine_id, name),
            "Created": go_time(created),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": [dict(c) for c in config]},
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": {},
            "Options": dict(options),
            "Labels": {},
        })
    return out
