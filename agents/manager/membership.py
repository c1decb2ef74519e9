"""Who is in the swarm: the objects `swarm init` creates, admitting a node that joins with a token, and
Docker's rules for leaving, promoting, demoting and removing managers.

Pure functions over the store (they build transactions or raise `ManagerError`s); the manager commits
the results and performs the Raft membership changes they imply.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass

from agents.manager import ca, tokens
from agents.manager.errors import FailedPrecondition, InvalidArgument, ManagerError
from agents.pki import client as pkiclient
from agents.state.objects import (
    Cluster,
    ClusterSpec,
    JoinTokens,
    ManagerStatus,
    Node,
    NodeDescription,
    NodeRole,
    NodeSpec,
    NodeState,
    NodeStatus,
    Reachability,
    RootCA,
)
from agents.state.store import Store
from agents.state.tx import Tx

CONTROL_PORT = 2377
RAFT_PORT = 2378


@dataclass(frozen=True)
class ManagerAddress:
    node_id: str
    raft_id: int
    control: str  # "ip:2377"
    raft: str  # "ip:2378"
    leader: bool


def cluster_of(store: Store | Tx) -> Cluster:
    clusters = store.list(Cluster)
    if not clusters:
        raise ManagerError("the cluster object is missing")
    return clusters[0]


def bootstrap(
    tx: Tx,
    *,
    cluster_id: str,
    node_id: str,
    raft_id: int,
    advertise_ip: str,
    root: ca.RootCA,
    description: NodeDescription,
    spec: ClusterSpec | None = None,
) -> Cluster:
    """The first changeset of a new swarm: the cluster (CA, join tokens) and the first manager."""
    join = tokens.JoinTokens.generate(root.cert_pem)
    cluster = Cluster(
        id=cluster_id,
        spec=spec or ClusterSpec(),
        root_ca=RootCA(
            ca_cert_pem=root.cert_pem,
            ca_key_pem=root.key_pem or b"",
            ca_cert_hash=root.digest,
            join_tokens=JoinTokens(worker=join.worker, manager=join.manager),
        ),
    )
    tx.create(cluster)
    tx.create(
        Node(
            id=node_id,
            spec=NodeSpec(role=NodeRole.MANAGER),
            description=description,
            status=NodeStatus(state=NodeState.READY, addr=advertise_ip),
            manager_status=ManagerStatus(
                raft_id=raft_id, addr=f"{advertise_ip}:{CONTROL_PORT}", leader=True,
                reachability=Reachability.REACHABLE,
            ),
            role=NodeRole.MANAGER,
        )
    )
    return cluster


def root_ca_of(cluster: Cluster) -> ca.RootCA:
    return ca.RootCA.from_pem(cluster.root_ca.ca_cert_pem, cluster.root_ca.ca_key_pem or None, cluster.id)


def join_tokens_of(cluster: Cluster) -> tokens.JoinTokens:
    return tokens.JoinTokens(worker=cluster.root_ca.join_tokens.worker, manager=cluster.root_ca.join_tokens.manager)


def join_role(cluster: Cluster, token: str, *, peer: str | None = None) -> tokens.Role:
    """The role a join token grants, or Docker's InvalidArgument error for a wrong or rotated-out one.

    Checked before anything is signed, so a bad token costs no signing process.
    """
    try:
        return tokens.verify_token(token, join_tokens_of(cluster), peer=peer)
    except tokens.JoinTokenError as e:
        raise InvalidArgument(str(e)) from None
    except tokens.InvalidJoinTokenError as e:
        raise InvalidArgument(str(e).split("desc = ", 1)[-1]) from None


async def issue_node_cert(cluster: Cluster, csr_pem: bytes, node_id: str, role: tokens.Role) -> bytes:
    """Sign the node's CSR with the cluster CA (out of process); a refused CSR is InvalidArgument."""
    expiry = _dt.timedelta(seconds=cluster.spec.ca_config.node_cert_expiry / 1e9)
    try:
        return await pkiclient.issue(root_ca_of(cluster), csr_pem, node_id, role, cluster.id, expiry)
    except ValueError as e:
        raise InvalidArgument(f"invalid certificate request: {e}") from None
    except pkiclient.PkiToolError as e:
        raise ManagerError(f"could not sign the certificate: {e}") from None


@dataclass(frozen=True)
class Admission:
    node: Node
    cert_pem: bytes
    role: NodeRole


def admit(
    tx: Tx,
    *,
    token: str,
    role: tokens.Role,
    cert_pem: bytes,
    node_id: str,
    raft_id: int,
    advertise_ip: str,
    description: NodeDescription,
    peer: str | None = None,
) -> Admission:
    """Record a joining node (in ``tx``) whose certificate was signed for ``role``.

    Call :func:`join_role` and :func:`issue_node_cert` first (signing cannot run inside a transaction);
    the token is checked again here, so one rotated out meanwhile still records nothing.
    """
    if join_role(cluster_of(tx), token, peer=peer) is not role:
        raise InvalidArgument(tokens.INVALID_TOKEN_DESC)
    node_role = NodeRole.MANAGER if role is tokens.Role.MANAGER else NodeRole.WORKER
    node = Node(
        id=node_id,
        spec=NodeSpec(role=node_role),
        description=description,
        status=NodeStatus(state=NodeState.UNKNOWN, addr=advertise_ip),
        manager_status=(
            ManagerStatus(raft_id=raft_id, addr=f"{advertise_ip}:{CONTROL_PORT}", reachability=Reachability.UNKNOWN)
            if node_role is NodeRole.MANAGER else None
        ),
        role=node_role,
    )
    tx.create(node)
    return Admission(node, cert_pem, node_role)


def managers(store: Store | Tx) -> list[Node]:
    return [n for n in store.list(Node) if n.manager_status is not None]


def manager_addresses(store: Store | Tx, leader_raft_id: int) -> list[ManagerAddress]:
    out = []
    for n in managers(store):
        ms = n.manager_status
        assert ms is not None
        ip = ms.addr.rsplit(":", 1)[0]
        out.append(ManagerAddress(n.id, ms.raft_id, ms.addr, f"{ip}:{RAFT_PORT}", ms.raft_id == leader_raft_id))
    return out


def check_remove(store: Store, node: Node, force: bool) -> None:
    """Docker's rules for `docker node rm`."""
    if node.role is NodeRole.MANAGER or node.manager_status is not None:
        raise FailedPrecondition(
            f"node {node.id} is a cluster manager and is a member of the raft cluster. "
            "It must be demoted to worker before removal"
        )
    if node.status.state is not NodeState.DOWN and not force:
        raise FailedPrecondition(
            f"node {node.id} is not down and can't be removed"
        )


def check_demote(store: Store, node: Node) -> None:
    """Refuse a demotion that would leave no manager, or lose quorum among reachable managers."""
    mgrs = managers(store)
    if len(mgrs) <= 1 and node.manager_status is not None:
        raise FailedPrecondition("attempting to demote the last manager of the swarm")
    reachable = [m for m in mgrs if m.manager_status and m.manager_status.reachability is Reachability.REACHABLE]
    remaining = len(mgrs) - 1
    if node in reachable and len(reachable) - 1 < remaining // 2 + 1:
        raise FailedPrecondition("can't remove member from the raft: this would result in a loss of quorum")


def leave_warning(store: Store, node_id: str) -> str | None:
    """Docker's refusal for `docker swarm leave` on a manager without --force (None for workers).

    As dockerd: a manager is always refused; the message adds the quorum arithmetic when leaving would
    lose quorum (reachable - 2 <= unreachable), or the last-manager warning.
    """
    mgrs = managers(store)
    if not any(m.id == node_id for m in mgrs):
        return None
    reachable = sum(1 for m in mgrs if m.manager_status and m.manager_status.reachability is not Reachability.UNREACHABLE)
    unreachable = len(mgrs) - reachable
    msg = "You are attempting to leave the swarm on a node that is participating as a manager. "
    if reachable - 2 <= unreachable:
        if reachable == 1 and unreachable == 0:
            return msg + "Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. "
        msg += (
            f"Removing this node leaves {reachable - 1} managers out of {reachable + unreachable}. "
            "Without a Raft quorum your swarm will be inaccessible. "
        )
    return msg + (
        "The only way to restore a swarm that has lost consensus is to reinitialize it with "
        "`--force-new-cluster`. Use `--force` to suppress this message."
    )


def with_leader_flags(node: Node, leader_raft_id: int, reachable: bool) -> Node | None:
    """A copy of a manager node with ManagerStatus.leader/reachability brought up to date, or None."""
    ms = node.manager_status
    if ms is None:
        return None
    leader = ms.raft_id == leader_raft_id
    reach = Reachability.REACHABLE if reachable else Reachability.UNREACHABLE
    if ms.leader == leader and ms.reachability is reach:
        return None
    out = node.copy()
    assert out.manager_status is not None
    out.manager_status = dataclasses.replace(out.manager_status, leader=leader, reachability=reach)
    return out
