"""Benchmarks: quality (judge accuracy, KID) and speed; print ratios against a reference measured in the same run."""
