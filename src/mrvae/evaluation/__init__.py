"""Judging enhancement: the metric registry, the baselines to compare with, the test sets and
the report of ``mrvae eval``."""
