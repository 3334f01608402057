"""Serving many personal models at once over one base model.

Tiers, dependencies one way (as in vLLM's LoRA package):
`tessera.kernels` (add_lora) -> `lora_layers` (multi-LoRA linears, slot tables) ->
`residency` (device slots <- CPU LRU <- adapter store) -> `model_runner` (batched KV
cache, forward steps) -> `engine` (continuous batching, sampling, back-pressure) ->
routes / gRPC servicer. `revisions` decides who is served what; `revision_follower`
swaps it live; `component` wires it all into `tessera serve`.
"""
