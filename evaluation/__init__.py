"""Retrieval evaluation (Recall@k, MRR, mAP) for music<->text sets, with bootstrap confidence intervals.

- ``metrics``: pure functions on score/embedding matrices (pessimistic ties, CIs, chance levels);
  ``evaluate_embeddings(text, audio, relevant, n_bootstrap=0)`` is what a training loop calls.
- ``datasets``: WikiMT-X style JSONL and generic (audio_path, text[, group]) CSV/JSONL loaders.
- ``protocol``: embed once (cached by model fingerprint + content hash), score, rank both directions.
- ``report`` and ``commands``: the JSON report, the terminal table and ``muqsearch eval``.
"""
