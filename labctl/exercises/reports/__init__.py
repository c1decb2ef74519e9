"""Grading reports: rich summary (terminal), JUnit XML (CI), JSON (tools) and GitHub Classroom
autograding output. Each module turns `LabResult`s into one format and does nothing else."""
