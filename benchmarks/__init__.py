"""Benchmarks of deqlib: solver speed against torchdeq, solver overhead, backward memory, training throughput and
notebook run times. Run them with ``python -m benchmarks.run`` (see ``benchmarks/README.md``).

These are measurements, not tests: nothing in the test suite or CI depends on them.
"""
