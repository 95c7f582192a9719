"""Resampling statistics over per-sample metric rows: bootstrap intervals and paired tests."""

from bench.stats.bootstrap import Interval, bootstrap
from bench.stats.paired import paired_randomization_test

__all__ = ["Interval", "bootstrap", "paired_randomization_test"]
