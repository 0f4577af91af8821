"""Retrieval metrics over a score matrix, with pessimistic ties, bootstrap CIs and chance levels.

Everything here is a pure function of numpy arrays, so training code can call it on embeddings it already
holds (see :func:`evaluate_embeddings`) and anyone can recompute a report from dumped scores.

Conventions (stated in every report):
- A query's relevant set is explicit: ``relevant[q, c]`` is True when candidate c is a right answer.
- **Ties are broken pessimistically**: among candidates with equal scores, every wrong candidate ranks
  above every right one. A model that scores everything equal gets the worst rank, not the best.
- ``r@k`` is the hit rate: the fraction of queries with at least one relevant candidate in the top k
  (k larger than the pool counts the whole pool). ``mrr``, ``mean_rank`` and ``median_rank`` use the rank
  of the first relevant candidate (1 = best). ``map@10`` averages AP@10 = sum over relevant candidates
  ranked within the top 10 of precision at their rank, divided by min(n_relevant, 10).
"""

from __future__ import annotations

import numpy as np

RECALL_KS = (1, 5, 10, 100)
AP_CUTOFF = 10
METRICS = tuple(f"r@{k}" for k in RECALL_KS) + ("mrr", "mean_rank", "median_rank", f"map@{AP_CUTOFF}")
DIRECTIONS = ("text_to_music", "music_to_text")


def _check(scores: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be equal 2-D shapes")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    empty = np.flatnonzero(~relevant.any(axis=1))
    if empty.size:
        raise ValueError(f"{empty.size} queries have no relevant candidate (first: row {empty[0]})")
    return scores, relevant


def relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> list[np.ndarray]:
    """For each query, the 1-based ranks of its relevant candidates in ascending order (pessimistic ties).

    Sorting a query's relevant scores from best to worst, the i-th of them (1-based) ranks behind the
    i - 1 relevant ones before it and behind every wrong candidate scoring at least as high.
    """
    scores, relevant = _check(scores, relevant)
    ranks = []
    for row, rel in zip(scores, relevant, strict=True):
        wrong = np.sort(row[~rel])  # ascending
        right = np.sort(row[rel])[::-1]  # descending
        wrong_at_or_above = wrong.size - np.searchsorted(wrong, right, side="left")
        ranks.append(wrong_at_or_above + np.arange(1, right.size + 1))
    return ranks


def per_query_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's value for every query (shape (Q,)); the reported figure is their mean or median."""
    ranks = relevant_ranks(scores, relevant)
    first = np.array([r[0] for r in ranks], dtype=np.float64)
    values = {f"r@{k}": (first <= k).astype(np.float64) for k in RECALL_KS}
    values["mrr"] = 1.0 / first
    values["mean_rank"] = first
    values["median_rank"] = first
    values[f"map@{AP_CUTOFF}"] = np.array([_average_precision(r, AP_CUTOFF) for r in ranks])
    return values


def _average_precision(ranks: np.ndarray, cutoff: int) -> float:
    """AP@cutoff from the ascending ranks of one query's relevant candidates."""
    hits = ranks[ranks <= cutoff]
    precisions = np.arange(1, hits.size + 1) / hits
    return float(precisions.sum() / min(ranks.size, cutoff))


def _aggregate(name: str, values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis) if name == "median_rank" else np.mean(values, axis=axis)


def retrieval_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float | None]]:
    """``{metric: {value, ci_low, ci_high}}`` for queries (rows) ranked against candidates (columns).

    CIs are percentile bootstrap intervals over queries resampled with replacement (seeded, so a report
    is reproducible); with ``n_bootstrap=0`` they are None (cheap enough for periodic training evals).
    """
    values = per_query_metrics(scores, relevant)
    n_queries = len(values["mrr"])
    if n_bootstrap > 0:
        resample = np.random.default_rng(seed).integers(0, n_queries, size=(n_bootstrap, n_queries))
    tail = (1.0 - confidence) / 2.0 * 100.0
    out = {}
    for name in METRICS:
        entry = {"value": float(_aggregate(name, values[name])), "ci_low": None, "ci_high": None}
        if n_bootstrap > 0:
            replicates = _aggregate(name, values[name][resample], axis=1)
            low, high = np.percentile(replicates, [tail, 100.0 - tail])
            entry["ci_low"], entry["ci_high"] = float(low), float(high)
        out[name] = entry
    return out


def _first_rank_survival(pool: int, n_relevant: int) -> np.ndarray:
    """P(first relevant rank > r) for r = 0..pool when the n_relevant right answers sit at random ranks."""
    r = np.arange(pool, dtype=np.float64)
    step = np.clip((pool - r - n_relevant) / (pool - r), 0.0, None)  # P(> r + 1 | > r)
    return np.concatenate([[1.0], np.cumprod(step)])


def chance_levels(relevant: np.ndarray) -> dict[str, float]:
    """Each metric's expected value when candidates are ranked uniformly at random.

    Exact, not simulated: it depends only on the pool size and each query's number of relevant items.
    """
    relevant = np.asarray(relevant, dtype=bool)
    n_queries, pool = relevant.shape
    counts = relevant.sum(axis=1)
    if n_queries == 0 or (counts == 0).any():
        raise ValueError("every query needs at least one relevant candidate")
    sums = dict.fromkeys(METRICS, 0.0)
    mixture_cdf = np.zeros(pool + 1)
    r = np.arange(1, pool + 1)
    for m, n_with_m in zip(*np.unique(counts, return_counts=True), strict=True):
        survival = _first_rank_survival(pool, int(m))
        p_first = survival[:-1] - survival[1:]  # P(first relevant rank = r), r = 1..pool
        for k in RECALL_KS:
            sums[f"r@{k}"] += n_with_m * (1.0 - survival[min(k, pool)])
        sums["mrr"] += n_with_m * float((p_first / r).sum())
        sums["mean_rank"] += n_with_m * float(survival.sum())  # E[X] = sum_{r>=0} P(X > r)
        sums[f"map@{AP_CUTOFF}"] += n_with_m * _chance_average_precision(pool, int(m), AP_CUTOFF)
        mixture_cdf += n_with_m * (1.0 - survival)
    chance = {name: value / n_queries for name, value in sums.items()}
    chance["median_rank"] = float(np.argmax(mixture_cdf / n_queries >= 0.5))
    return chance


def _chance_average_precision(pool: int, m: int, cutoff: int) -> float:
    """E[AP@cutoff] under a random ranking: E[rel_i * sum_{j<=i} rel_j] / i, summed and normalised."""
    i = np.arange(1, min(cutoff, pool) + 1, dtype=np.float64)
    both = m * (m - 1) / (pool * (pool - 1)) if pool > 1 else 0.0
    return float(((m / pool + (i - 1) * both) / i).sum() / min(m, cutoff))


def evaluate_embeddings(
    text_embeddings: np.ndarray,
    audio_embeddings: np.ndarray,
    relevant: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Both directions from embeddings: ``{direction: {metric: {value, ci_low, ci_high}}}``.

    ``relevant`` is (n_texts, n_audio). Scores are dot products of the rows as given (normalise first for
    cosine). Queries without any relevant candidate are left out of that direction.
    """
    scores = np.asarray(text_embeddings, dtype=np.float32) @ np.asarray(audio_embeddings, dtype=np.float32).T
    relevant = np.asarray(relevant, dtype=bool)
    out = {}
    for direction, s, rel in (("text_to_music", scores, relevant), ("music_to_text", scores.T, relevant.T)):
        keep = rel.any(axis=1)
        out[direction] = retrieval_metrics(s[keep], rel[keep], n_bootstrap=n_bootstrap, seed=seed)
    return out


# --- representation metrics: ABX agreement, tagging, probes ----------------------------------------------


def bootstrap_interval(
    statistic, n_items: int, *, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float | None]:
    """``{value, ci_low, ci_high}`` for ``statistic(indices)`` over items resampled with replacement.

    ``statistic`` maps an index array to a number (NaN when a resample cannot be scored, e.g. a tag with
    no positive in it; such replicates are dropped). Percentile intervals, seeded; None with n_bootstrap=0.
    """
    entry = {"value": float(statistic(np.arange(n_items))), "ci_low": None, "ci_high": None}
    if n_bootstrap > 0 and n_items > 0:
        resample = np.random.default_rng(seed).integers(0, n_items, size=(n_bootstrap, n_items))
        replicates = np.array([statistic(r) for r in resample], dtype=np.float64)
        replicates = replicates[np.isfinite(replicates)]
        if replicates.size:
            tail = (1.0 - confidence) / 2.0 * 100.0
            low, high = np.percentile(replicates, [tail, 100.0 - tail])
            entry["ci_low"], entry["ci_high"] = float(low), float(high)
    return entry


def abx_outcomes(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Per triplet: 1 when X is more similar to the side it should be closer to, 0 when less, 0.5 on a tie
    (an embedding that cannot tell scores chance, never better)."""
    near, far = np.asarray(near, dtype=np.float64), np.asarray(far, dtype=np.float64)
    return np.where(near > far, 1.0, np.where(near < far, 0.0, 0.5))


ABX_CHANCE = 0.5


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (tied scores count half), as sklearn's roc_auc_score."""
    truth = np.asarray(truth, dtype=bool)
    _, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties get their average rank
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision over the distinct score thresholds, as sklearn's average_precision_score."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ranked, hits = np.asarray(scores, dtype=np.float64)[order], np.asarray(truth, dtype=bool)[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last index of each distinct score
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tag_auc(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-tag ROC-AUC and PR-AUC (average precision) of (clips, tags) scores; NaN for a tag whose column
    has no positive or no negative (it cannot be ranked). Numpy, not sklearn: bootstraps call it a lot."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    roc, pr = np.full(truth.shape[1], np.nan), np.full(truth.shape[1], np.nan)
    for t in range(truth.shape[1]):
        if 0 < truth[:, t].sum() < len(truth):
            roc[t] = roc_auc(truth[:, t], scores[:, t])
            pr[t] = average_precision(truth[:, t], scores[:, t])
    return roc, pr


def tagging_metrics(
    scores: np.ndarray, truth: np.ndarray, tags: list[str], *, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[dict, dict, dict]:
    """(results, per_tag, chance) for zero-shot tagging.

    results = {"roc_auc": {value, ci_low, ci_high}, "pr_auc": ...}: macro means over the tags that have
    positives and negatives, bootstrapped over clips. per_tag[tag] = {roc_auc, pr_auc, positives}.
    chance: ROC-AUC 0.5; PR-AUC the mean positive rate (what a random score's average precision expects).
    """
    truth = np.asarray(truth, dtype=bool)
    roc, pr = tag_auc(scores, truth)
    scored = np.isfinite(roc)

    def macro(which: int):
        def statistic(rows: np.ndarray) -> float:
            values = tag_auc(scores[rows][:, scored], truth[rows][:, scored])[which]
            return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return statistic

    results = {
        name: bootstrap_interval(macro(i), len(truth), n_bootstrap=n_bootstrap, seed=seed)
        for i, name in enumerate(("roc_auc", "pr_auc"))
    }
    per_tag = {
        tag: {"roc_auc": None if not scored[t] else float(roc[t]), "pr_auc": None if not scored[t] else float(pr[t]),
              "positives": int(truth[:, t].sum())}
        for t, tag in enumerate(tags)
    }
    chance = {"roc_auc": 0.5, "pr_auc": float(truth[:, scored].mean(axis=0).mean()) if scored.any() else None}
    return results, per_tag, chance


def classification_metrics(
    truth: np.ndarray, predicted: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[dict, dict]:
    """(results, chance) for a probe's test predictions: accuracy and macro-F1 with bootstrap CIs over test
    items; chance is what always answering the test set's most common label scores."""
    from sklearn.metrics import f1_score

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    labels = np.unique(truth)
    results = {
        "accuracy": bootstrap_interval(lambda r: float(np.mean(truth[r] == predicted[r])), len(truth),
                                       n_bootstrap=n_bootstrap, seed=seed),
        "macro_f1": bootstrap_interval(
            lambda r: float(f1_score(truth[r], predicted[r], labels=labels, average="macro", zero_division=0)),
            len(truth), n_bootstrap=n_bootstrap, seed=seed,
        ),
    }
    values, counts = np.unique(truth, return_counts=True)
    majority = np.full_like(truth, values[np.argmax(counts)])
    chance = {
        "accuracy": float(counts.max() / counts.sum()),
        "macro_f1": float(f1_score(truth, majority, labels=labels, average="macro", zero_division=0)),
    }
    return results, chance
