"""Benchmarks, the soak, studies and demo data (package `tessera.bench`).

Results are data in `bench/results/`; the harnesses here may import every other folder.
"""
