"""Executors: how a swarm task becomes a running "container" on this node.

`process.ProcessExecutor` (the default) runs catalog images as host processes isolated with Linux
namespaces; `docker.DockerExecutor` drives a real Docker engine when one is reachable. Both satisfy
`base.Executor`. This package's ``__init__`` imports nothing: the task supervisor (`shim.py`) imports
`logs` from here in every task process and must stay small.
"""
