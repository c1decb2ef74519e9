"""The built-in image catalog: small programs that behave like the images the tutorials use.

Labs run without a registry or a container engine: an image reference resolves to an `ImageSpec`
(see `catalog`), and each task runs `run.py`, which starts the matching program (or execs the host
binaries, for alpine/busybox-like images). Nothing here imports ``labctl``; the programs themselves
import only the standard library so that a hundred replicas start fast and stay small.
"""

from __future__ import annotations

from agents.worker.images.catalog import (
    ExecNotFound,
    ImageError,
    ImageSpec,
    InvalidReference,
    NoSuchImage,
    build_argv,
    host_argv,
    image_inspect,
    load_catalog_file,
    register,
    resolve,
)

__all__ = [
    "ExecNotFound",
    "ImageError",
    "ImageSpec",
    "InvalidReference",
    "NoSuchImage",
    "build_argv",
    "host_argv",
    "image_inspect",
    "load_catalog_file",
    "register",
    "resolve",
]
