"""The personalization study: replay real speakers' histories through the real system
(ingest API -> event log -> nightly revisions -> gate -> served model) and measure, per
speaker, the held-out NLL of every model they could be served.

- `design`: which speakers, how each history is split by time (days, test set);
- `runner`: drives the running system over the simulated nights;
- `ablation`: the personal adapter trained from the base alone (not what the system does);
- `measure`: NLL of every condition on each speaker's test set and on the general set;
- `generate`, `attribution`, `style`: replies of base, prior and served model to each
  speaker's test prompts, the share a speaker classifier attributes to the speaker, and
  the share that repeat a word 3-gram;
- `report`: aggregates, the terminal table, the PNG plot, the JSON document.
"""
