"""Imports every module that registers built-in check kinds."""

from labctl.exercises.checks import command, http, httploop, nodes, secrets, services, swarm, tasks

__all__ = ["command", "http", "httploop", "nodes", "secrets", "services", "swarm", "tasks"]
