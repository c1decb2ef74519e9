"""One small program per catalog image; each exposes ``main(argv, spec) -> int`` and uses only the stdlib."""
