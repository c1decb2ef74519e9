"""Swarm manager: PKI and join tokens (ca), key material on disk (keys), join tokens (tokens)."""
