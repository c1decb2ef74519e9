"""Declarative, engine-neutral checks: they read a swarm only through the Docker API (docker SDK), so the
same lab grades labagent and a real Docker Swarm alike."""

from labctl.exercises.checks.registry import CheckError, Outcome, Params, check, get_kind, kinds

__all__ = ["CheckError", "Outcome", "Params", "check", "get_kind", "kinds"]
