"""Executors: how a swarm task becomes a running "container" on this node.

`process.ProcessExecutor` (the default) runs catalog images as host processes isolated with Linux
namespaces; `docker.DockerExecutor` drives a real Docker engine when one is reachable. Both satisfy
`base.Executor`. This package's ``__init__`` imports nothing: the task launcher (`launcher.py`) imports
the supervisor (`shim.py`) and `logs` from here and forks them for every task, so what it loads is paid
for in every task's memory.
"""
