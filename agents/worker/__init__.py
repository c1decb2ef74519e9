"""Worker side of the agent: runs swarm tasks as processes in their own network namespaces."""
