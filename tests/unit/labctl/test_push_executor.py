"""What `executor: docker` changes in a push, before any SSH: the agent's environment and service files,
and the wheelhouse's requirements. (The push itself, against a real engine: test_push_docker_engine.py.)"""

from __future__ import annotations

import importlib.metadata

from labctl import dockerengine, push, wheelhouse
from labctl.spec import parse_spec


def test_docker_executor_points_the_agent_at_the_nodes_engine() -> None:
    docker = push.agent_service(parse_spec({"provider": "vagrant", "subnet": "192.168.56.0/24", "managers": 1,
                                            "executor": "docker"}), "manager1")
    process = push.agent_service(parse_spec({"provider": "vagrant", "subnet": "192.168.56.0/24", "managers": 1}),
                                 "manager1")
    assert docker.docker_engine == dockerengine.ENGINE_HOST == "unix:///run/docker-engine/docker.sock"
    engine_env = {"LABAGENT_EXECUTOR": "docker", "LABAGENT_DOCKER_HOST": dockerengine.ENGINE_HOST}
    assert docker.env == {**process.env, **engine_env}
    assert docker.args == process.args and "/run/docker.sock" in docker.args  # the agent keeps its own socket
    env_file = docker.files()["agent.env"].splitlines()
    assert "LABAGENT_EXECUTOR=docker" in env_file
    assert "LABAGENT_DOCKER_HOST=unix:///run/docker-engine/docker.sock" in env_file
    # A process lab's agent.env is what it always was (no executor keys: pushes restart nothing), and
    # switching a lab's executor changes the service digest, so the push restarts the agent.
    assert process.docker_engine == "" and not any(k.startswith("LABAGENT_EXECUTOR") for k in process.env)
    assert "LABAGENT_DOCKER_HOST" not in process.files()["agent.env"]
    assert docker.digest() != process.digest()
    other = push.with_docker_engine(process, "unix:///srv/engine.sock")
    assert (other.docker_engine, other.env["LABAGENT_DOCKER_HOST"]) == ("unix:///srv/engine.sock",) * 2


def test_the_docker_sdk_is_in_the_wheelhouse_only_when_asked() -> None:
    plain = wheelhouse.pinned_requirements()
    with_sdk = wheelhouse.pinned_requirements(docker_sdk=True)
    assert not any(r.split("==")[0] == "docker" for r in plain)
    assert with_sdk[: len(plain)] == plain
    assert f"docker=={importlib.metadata.version('docker')}" in with_sdk  # pinned to the host's, like the rest


def test_the_host_side_names_the_agents_task_label_and_secrets_dir() -> None:
    """`labctl down`/`halt` on ssh machines find the agent's task containers and secrets by these (labctl
    does not import the agent, so the names are written twice)."""
    from agents.worker.executor.docker import SPEC_LABEL, DockerExecutor

    ex = DockerExecutor("unix:///nonexistent/docker.sock", "/var/lib/docker")  # asks no engine anything
    try:
        assert (SPEC_LABEL, ex.secrets_dir) == (dockerengine.TASK_LABEL, dockerengine.SECRETS_DIR)
    finally:
        ex.client.close()
    assert dockerengine.TASK_LABEL in dockerengine.tasks_command("kill")
    assert dockerengine.SECRETS_DIR in dockerengine.tasks_command("remove")
