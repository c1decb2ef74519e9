"""Tying an exercise to a lab: which lab it runs on, bringing that lab up from the exercise's topology,
and refusing a lab whose nodes do not match what the exercise needs."""

from __future__ import annotations

import fnmatch

from labctl import registry
from labctl.errors import LabError, UsageError
from labctl.exercises.model import Exercise
from labctl.providers.base import Progress, no_progress
from labctl.registry import LabRecord
from labctl.spec import LabSpec, parse_spec


def spec_for(exercise: Exercise, lab: str | None) -> LabSpec:
    """The exercise's topology as a lab spec, named `lab` (default: the exercise id)."""
    if lab is None or lab == exercise.lab.name:
        return exercise.lab
    data = exercise.lab.model_dump(mode="json")
    data.pop("managers", None)
    data.pop("workers", None)
    data["name"] = lab
    return parse_spec(data, "topology")


def check_fits(exercise: Exercise, record: LabRecord) -> None:
    """The lab must have every node the exercise names, with the planned role."""
    have = {n.name: n.role for n in record.spec.nodes}
    wrong = [f"{n.name} ({n.role})" for n in exercise.lab.nodes if have.get(n.name) != n.role]
    if wrong:
        raise UsageError(f"lab {record.name} does not fit exercise {exercise.id}: it lacks {', '.join(wrong)}; "
                         f"bring one up with 'labctl run {exercise.id} --lab NEWNAME'")
    if exercise.lab.swarm == "form" and record.spec.swarm != "form":
        raise UsageError(f"exercise {exercise.id} needs a formed swarm; lab {record.name} is bare")


def ensure_lab(exercise: Exercise, lab: str | None, progress: Progress = no_progress) -> tuple[LabRecord, bool]:
    """The lab to run on, brought up from the topology if it does not exist; (record, created)."""
    from labctl import lifecycle

    name = lab or exercise.lab.name
    if name in registry.names():
        record = registry.load(name)
        if record.status == "up":
            check_fits(exercise, record)
            return record, False
    return lifecycle.up(spec_for(exercise, name), progress)


def labs_to_grade(exercise: Exercise, labs: list[str], pattern: str | None) -> list[str]:
    """--lab names, plus labs matching --class; default the exercise's own lab, else the only lab."""
    chosen = list(labs)
    if pattern:
        matched = [n for n in registry.names() if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise LabError(f"no lab matches {pattern!r} (labs: {', '.join(registry.names()) or 'none'})")
        chosen += [n for n in matched if n not in chosen]
    if chosen:
        return chosen
    if exercise.lab.name in registry.names():
        return [exercise.lab.name]
    return [registry.resolve(None)]
