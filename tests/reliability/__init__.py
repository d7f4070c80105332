"""Reliability, security and fuzz suite (issue 5): faults injected, leftovers counted, figures recorded.

Scale: ``OCW_RELIABILITY_SCALE=short`` (default, fits CI) or ``full`` (the issue's counts).
Figures: one JSON line per test in ``$OCW_RELIABILITY_REPORT`` (see ``benchmarks/reliability_report.py``).
"""
