"""Retrieval metrics: hand-computed cases, an independent brute force, chance levels by simulation."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from evaluation.metrics import (
    METRICS,
    chance_levels,
    evaluate_embeddings,
    per_query_metrics,
    relevant_ranks,
    retrieval_metrics,
)


def values(scores, relevant):
    return {name: entry["value"] for name, entry in retrieval_metrics(scores, relevant, n_bootstrap=0).items()}


# --- hand-computed cases -----------------------------------------------------------------------------


def test_ties_rank_the_right_answer_below_every_equal_score():
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    relevant = np.array([[True, False, False, False]])
    # Two wrong candidates tie with the right one: pessimistically it is third.
    assert relevant_ranks(scores, relevant)[0].tolist() == [3]
    got = values(scores, relevant)
    assert got["r@1"] == 0.0 and got["r@5"] == 1.0
    assert got["mrr"] == pytest.approx(1 / 3)
    assert got["mean_rank"] == 3 and got["median_rank"] == 3
    assert got["map@10"] == pytest.approx(1 / 3)


def test_all_equal_scores_give_the_worst_rank():
    scores = np.zeros((2, 5))
    relevant = np.eye(2, 5, dtype=bool)
    assert [r.tolist() for r in relevant_ranks(scores, relevant)] == [[5], [5]]


def test_relevant_items_tied_with_each_other_take_consecutive_ranks():
    scores = np.array([[0.9, 0.9, 0.9, 0.2]])
    relevant = np.array([[True, True, False, False]])
    # The wrong candidate at 0.9 goes first; the two right ones take ranks 2 and 3.
    assert relevant_ranks(scores, relevant)[0].tolist() == [2, 3]
    got = values(scores, relevant)
    assert got["mrr"] == pytest.approx(0.5)
    assert got["map@10"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_several_relevant_items():
    # Order by score: c0 (wrong), c1 (right), c2 (wrong), c3 (right), c4 (right, last).
    scores = np.array([[0.9, 0.8, 0.7, 0.6, -0.5]])
    relevant = np.array([[False, True, False, True, True]])
    assert relevant_ranks(scores, relevant)[0].tolist() == [2, 4, 5]
    got = values(scores, relevant)
    assert got["r@1"] == 0.0 and got["r@5"] == 1.0
    assert got["mrr"] == pytest.approx(0.5)
    assert got["mean_rank"] == 2
    assert got["map@10"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)


def test_map_divides_by_at_most_ten_relevant():
    scores = -np.arange(30, dtype=float)[None, :]  # candidate i ranks i + 1
    relevant = np.zeros((1, 30), dtype=bool)
    relevant[0, 5:25] = True  # 20 relevant, ranks 6..25; ranks 6..10 fall inside the top 10
    expected = sum(i / (5 + i) for i in range(1, 6)) / 10
    assert values(scores, relevant)["map@10"] == pytest.approx(expected)


def test_k_larger_than_the_pool_counts_the_whole_pool():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    relevant = np.array([[True, False, False], [False, False, True]])
    got = values(scores, relevant)
    assert got["r@1"] == 0.0
    assert got["r@5"] == got["r@10"] == got["r@100"] == 1.0
    assert got["mean_rank"] == 3
    chance = chance_levels(relevant)
    assert chance["r@5"] == chance["r@100"] == 1.0
    assert chance["r@1"] == pytest.approx(1 / 3)


def test_median_over_queries():
    scores = -np.tile(np.arange(10, dtype=float), (3, 1))
    relevant = np.zeros((3, 10), dtype=bool)
    relevant[0, 0] = relevant[1, 3] = relevant[2, 8] = True  # first ranks 1, 4, 9
    got = values(scores, relevant)
    assert got["median_rank"] == 4
    assert got["mean_rank"] == pytest.approx(14 / 3)
    assert got["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 9) / 3)


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="no relevant candidate"):
        values(np.zeros((2, 3)), np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="NaN"):
        values(np.array([[np.nan, 0.0]]), np.array([[True, False]]))
    with pytest.raises(ValueError, match="shapes"):
        values(np.zeros((2, 3)), np.ones((3, 2), dtype=bool))


# --- an independent brute force ----------------------------------------------------------------------


def brute_force(scores, relevant):
    """Sort candidates by (score desc, wrong before right) and walk the list."""
    per_query = {name: [] for name in METRICS}
    for row, rel in zip(scores.tolist(), relevant.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda c: (-row[c], rel[c]))
        ranked_rel = [rel[c] for c in order]
        first = ranked_rel.index(True) + 1
        for k in (1, 5, 10, 100):
            per_query[f"r@{k}"].append(1.0 if any(ranked_rel[:k]) else 0.0)
        per_query["mrr"].append(1 / first)
        per_query["mean_rank"].append(first)
        per_query["median_rank"].append(first)
        hits, precision_sum = 0, 0.0
        for position, is_rel in enumerate(ranked_rel[:10], start=1):
            if is_rel:
                hits += 1
                precision_sum += hits / position
        per_query["map@10"].append(precision_sum / min(sum(rel), 10))
    return {
        name: statistics.median(v) if name == "median_rank" else statistics.fmean(v)
        for name, v in per_query.items()
    }


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    n_queries, pool = rng.integers(1, 40), rng.integers(1, 150)
    # Coarse scores so that ties are frequent; 1-4 relevant candidates per query.
    scores = rng.integers(0, 6, size=(n_queries, pool)).astype(np.float32) / 5
    relevant = np.zeros((n_queries, pool), dtype=bool)
    for q in range(n_queries):
        relevant[q, rng.choice(pool, size=min(pool, rng.integers(1, 5)), replace=False)] = True
    got = values(scores, relevant)
    expected = brute_force(scores, relevant)
    for name in METRICS:
        assert got[name] == pytest.approx(expected[name]), name


def test_chance_levels_match_simulated_random_rankings():
    rng = np.random.default_rng(1)
    pool, n_queries = 40, 12
    relevant = np.zeros((n_queries, pool), dtype=bool)
    for q in range(n_queries):
        relevant[q, rng.choice(pool, size=1 + q % 3, replace=False)] = True
    trials = 3000
    scores = rng.random((trials, n_queries, pool))
    per_trial = [per_query_metrics(s, relevant) for s in scores]
    chance = chance_levels(relevant)
    for name in METRICS:
        if name == "median_rank":
            pooled = np.concatenate([p[name] for p in per_trial])
            assert abs(np.median(pooled) - chance[name]) <= 1
        else:
            simulated = np.mean([p[name].mean() for p in per_trial])
            assert simulated == pytest.approx(chance[name], rel=0.05), name


def test_chance_levels_for_one_relevant_item_in_a_thousand():
    chance = chance_levels(np.eye(1000, dtype=bool))
    assert chance["r@1"] == pytest.approx(0.001)
    assert chance["r@10"] == pytest.approx(0.01)
    assert chance["r@100"] == pytest.approx(0.1)
    assert chance["mrr"] == pytest.approx(sum(1 / r for r in range(1, 1001)) / 1000)
    assert chance["mean_rank"] == pytest.approx(500.5)
    assert chance["median_rank"] == 500


def test_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((200, 50))
    relevant = np.eye(200, 50, k=0, dtype=bool) | np.eye(200, 50, k=-50, dtype=bool)
    relevant |= np.eye(200, 50, k=-100, dtype=bool) | np.eye(200, 50, k=-150, dtype=bool)
    scores[relevant] += 1.5  # a model better than chance
    a = retrieval_metrics(scores, relevant, n_bootstrap=300, seed=7)
    b = retrieval_metrics(scores, relevant, n_bootstrap=300, seed=7)
    c = retrieval_metrics(scores, relevant, n_bootstrap=300, seed=8)
    assert a == b
    assert a != c
    for name in METRICS:
        assert a[name]["ci_low"] <= a[name]["value"] <= a[name]["ci_high"], name
    assert a["r@1"]["ci_low"] < a["r@1"]["ci_high"]


def test_evaluate_embeddings_covers_both_directions():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((30, 8)).astype(np.float32)
    text = audio + 0.01 * rng.standard_normal((30, 8)).astype(np.float32)  # text i describes audio i
    relevant = np.eye(30, dtype=bool)
    out = evaluate_embeddings(text, audio, relevant, n_bootstrap=0)
    assert set(out) == {"text_to_music", "music_to_text"}
    scores = text @ audio.T
    assert out["text_to_music"]["mrr"]["value"] == pytest.approx(values(scores, relevant)["mrr"])
    assert out["music_to_text"]["mrr"]["value"] == pytest.approx(values(scores.T, relevant.T)["mrr"])
    assert out["text_to_music"]["r@5"]["value"] > 0.5
