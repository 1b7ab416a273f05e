"""Benchmarks of council's own cost (bus, scaling, memory), run as `python -m bench.<name>`.

Each prints its figures as tables and, as its last line, one JSON object
(`--json` prints only the JSON). `--quick` is a smoke run of a few seconds.
"""
