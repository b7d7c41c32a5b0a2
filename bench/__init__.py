"""seqrec's benchmark suite: `python -m bench <suite>` (see docs/benchmarks.md)."""
