"""Task entry point: run one catalog image, the way ``docker run IMAGE [CMD...]`` would.

    python -m agents.worker.images.run [--entrypoint E] IMAGE [CMD...]   # docker-run semantics
    python -I -S .../run.py --argv IMAGE -- ARGV...                      # exact argv (the executor)

With ``--argv`` the words are the container's final argv (`catalog.build_argv` already merged
entrypoint and cmd); without it they replace the image's CMD. ``--spec JSON`` carries a
lab-registered image into the child (see `catalog.host_argv`). Python programs run in this process;
host commands (alpine's ``ping``, ``sh -c``...) replace it with ``execve`` so signals and exit codes
are the real binary's. Errors exit like ``docker run``: 125 for image errors, 127 for a missing
executable.
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run by path (``python -I -S run.py``): make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from agents.worker.images import catalog

USAGE = "usage: run [--spec JSON] [--entrypoint E] [--argv] IMAGE [--] [ARG...]"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line (by hand: argparse costs ~1.5 MB per task) and run the image."""
    words = list(sys.argv[1:] if argv is None else argv)
    spec_json: str | None = None
    entrypoint: list[str] | None = None
    exact = False
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag == "--argv":
            exact = True
        elif flag in ("--spec", "--entrypoint") and words:
            value = words.pop(0)
            if flag == "--spec":
                spec_json = value
            else:
                entrypoint = [value]
        elif flag.startswith("--entrypoint="):
            entrypoint = [flag.partition("=")[2]]
        elif flag == "--":
            break
        else:
            sys.stderr.write(USAGE + "\n")
            return 125
    if not words:
        sys.stderr.write(USAGE + "\n")
        return 125
    ref = words.pop(0)
    if words and words[0] == "--":
        words.pop(0)
    try:
        if spec_json is not None:
            import json

            spec = catalog.ImageSpec.from_dict(json.loads(spec_json))
        else:
            spec = catalog.resolve(ref)
        container_argv = words if exact else catalog.build_argv(spec, entrypoint, None, words)
        if not container_argv:
            raise catalog.ImageError("No command specified")
    except catalog.ImageError as exc:
        sys.stderr.write(f"docker: Error response from daemon: {exc}.\n")
        return 125
    for key, value in spec.env_dict().items():
        os.environ.setdefault(key, value)
    return run(spec, container_argv)


def run(spec: catalog.ImageSpec, container_argv: list[str]) -> int:
    """Run ``container_argv`` in ``spec``: its Python program, or exec the host command."""
    words = catalog.program_argv(spec, container_argv)
    if words is not None:
        import importlib

        assert spec.module is not None
        _set_process_name(os.path.basename(words[0]))
        program = importlib.import_module(spec.module)
        code = program.main(words, spec)
        return int(code or 0)
    try:
        host = catalog.host_command(spec, container_argv, os.environ.get("PATH"))
    except catalog.ExecNotFound as exc:
        sys.stderr.write(f"docker: Error response from daemon: failed to create task for container: {exc}.\n")
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(host[0], host, os.environ)
    except OSError as exc:
        sys.stderr.write(f"docker: Error response from daemon: exec: {container_argv[0]!r}: {exc.strerror}.\n")
        return 126
    return 0  # pragma: no cover - execve does not return


def _set_process_name(name: str) -> None:
    """What ``ps``/``top``/``docker top`` show for the task: ``nginx``, not ``python3``."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (ImportError, OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
