"""Retrieval evaluation (Recall@k, MRR, mAP) for music<->text sets, with bootstrap confidence intervals.

- ``metrics``: pure functions on score/embedding matrices (pessimistic ties, CIs, chance levels);
  ``evaluate_embeddings(text, audio, relevant, n_bootstrap=0)`` is what a training loop calls.
- ``datasets``: WikiMT-X style JSONL and generic (audio, text[, group]) pair files (CSV/JSONL, read by
  muq_model.pairs as training reads them).
- ``protocol``: embed once (cached by model fingerprint + content hash), score, rank both directions.
- ``report`` and ``commands``: the JSON report, the terminal table and ``muqsearch eval``.
- Representation evaluations (``eval --abx/--tagging/--probe``): ``abx``, ``tagging``, ``probe`` (sets
  and figures), ``embedders`` (what they embed with), ``representation`` (the runs and their report).
"""
