"""The benchmarks', the study's and the demo's commands of `tessera` (one module per
command group, registered by `tessera.bench.cli`)."""
