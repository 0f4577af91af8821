"""Retrieval evaluation (Recall@k, MRR, mAP) for music<->text sets, with bootstrap confidence intervals."""
