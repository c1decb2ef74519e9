"""Guided exercises and automatic grading: the YAML format (`model`), declarative checks read through the
Docker API (`checks`), the runner (`--auto` and guided), the grader and its reports."""
