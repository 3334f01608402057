"""Ingest: validate a batch of interactions, admit it, publish it to Kafka
(`service`), over gRPC (`grpc_service`; the HTTP routes are `services/routes/ingest.py`),
wired into `tessera serve` by `component`."""
