"""Benchmarks, the soak, studies, the demo and its data (package `tessera.bench`), and
the `tessera` command's root app (`cli`: the services' CLI plus these commands).

Results are data in `bench/results/`; the harnesses here may import every other folder,
and nothing outside bench (and tests) imports them (import-linter's layers contract).
"""
