"""evaluation.paraphrase: the held-out paraphrase set is well formed, and its scoring counts a query as
passed only when all of its top 3 clips carry every attribute it names."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from data.demo.captions import ATTRIBUTES
from evaluation.paraphrase import (
    QUERIES,
    VALIDATION,
    VALIDATION_2,
    VALIDATION_3,
    VALIDATION_4,
    centroid_oracle,
    compare,
    main,
    neighbour_agreement,
    read_queries,
    score,
)
from tests.helpers import needs_demo


@pytest.mark.parametrize("path", [QUERIES, VALIDATION, VALIDATION_2, VALIDATION_3, VALIDATION_4])
def test_each_set_has_enough_valid_queries_covering_every_attribute_kind(path):
    queries = read_queries(path)
    assert len(queries) >= 60
    assert len({q for q, _ in queries}) == len(queries)
    for _, named in queries:
        assert 1 <= len(named) <= 4
        assert all(value in ATTRIBUTES[name] for name, value in named.items())
    assert {name for _, named in queries for name in named} == set(ATTRIBUTES)


@pytest.mark.parametrize("a, b", list(itertools.combinations([QUERIES, VALIDATION, VALIDATION_2, VALIDATION_3, VALIDATION_4], 2)))
def test_no_two_sets_share_a_query(a, b):
    def words(path):
        return {query.lower() for query, _ in read_queries(path)}

    assert words(a) & words(b) == set()


def test_a_bad_attribute_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("# comment\n" + json.dumps({"query": "ok", "attributes": {"instrument": "piano"}}) + "\n"
                    + json.dumps({"query": "kazoo", "attributes": {"instrument": "kazoo"}}) + "\n")
    with pytest.raises(ValueError, match=r"q\.jsonl:3: unknown attribute instrument='kazoo'"):
        read_queries(path)


def test_a_query_passes_only_when_all_of_its_top_3_carry_every_named_attribute():
    # five clips on the unit circle's axes; text vectors pick the order of the top 3 exactly
    clips = np.eye(5, dtype=np.float32)
    attributes = [{"instrument": "piano", "mode": "minor"}, {"instrument": "piano", "mode": "minor"},
                  {"instrument": "piano", "mode": "major"}, {"instrument": "flute", "mode": "minor"},
                  {"instrument": "piano", "mode": "minor"}]
    text = np.array([
        [0.9, 0.8, 0.0, 0.0, 0.7],  # top 3 = clips 0, 1, 4: all piano and minor -> passes
        [0.9, 0.8, 0.7, 0.0, 0.0],  # top 3 = clips 0, 1, 2: clip 2 is major -> fails on mode only
        [0.9, 0.8, 0.7, 0.0, 0.0],  # asks piano only: the same three clips are all piano -> passes
        [0.0, 0.0, 0.0, 0.9, 0.1],  # top 3 = 3, 4, then 0 (tie broken in clip order): flute only at 3 -> fails
    ], np.float32)
    queries = [("a", {"instrument": "piano", "mode": "minor"}), ("b", {"instrument": "piano", "mode": "minor"}),
               ("c", {"instrument": "piano"}), ("d", {"instrument": "flute"})]
    report = score(text, clips, attributes, queries, n_bootstrap=200)
    assert report["passed"]["value"] == pytest.approx(0.5)
    assert [m["query"] for m in report["misses"]] == ["b", "d"]
    assert report["misses"][0]["kinds_carried"] == {"instrument": True, "mode": False}
    assert report["per_kind"]["instrument"]["value"] == pytest.approx(3 / 4)
    assert report["per_kind"]["mode"]["value"] == pytest.approx(1 / 2)
    assert report["per_kind"]["mode"]["queries"] == 2
    assert 0.0 <= report["passed"]["ci_low"] <= 0.5 <= report["passed"]["ci_high"] <= 1.0


def test_the_centroid_oracle_is_limited_by_what_the_clip_vectors_separate():
    # clips 0 and 1 share one vector but differ in loudness: no text vector can put only the loud one first
    clips = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    attributes = [{"instrument": "piano", "loudness": "loud"}, {"instrument": "piano", "loudness": "quiet"},
                  {"instrument": "flute", "loudness": "loud"}, {"instrument": "flute", "loudness": "loud"}]
    queries = [("flute", {"instrument": "flute"}), ("loud piano", {"instrument": "piano", "loudness": "loud"})]
    report = centroid_oracle(clips, attributes, queries, k=2, n_bootstrap=0)
    assert [m["query"] for m in report["misses"]] == ["loud piano"]
    assert report["passed"]["value"] == pytest.approx(0.5)


def test_neighbour_agreement_sees_what_the_vectors_separate_and_nothing_else():
    """Clips whose vectors encode the instrument but not the loudness: the instrument's neighbours agree,
    the loudness sits at chance."""
    rng = np.random.default_rng(0)
    instruments = ["piano", "flute", "organ"] * 40
    loudness = [("quiet", "loud")[int(b)] for b in rng.integers(2, size=120)]
    centres = {i: rng.normal(size=16) for i in set(instruments)}
    vectors = np.stack([centres[i] + 0.1 * rng.normal(size=16) for i in instruments]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    heard = neighbour_agreement(vectors, [{"instrument": i, "loudness": q} for i, q in zip(instruments, loudness, strict=True)])
    assert heard["instrument"]["agreement"] == 1.0
    assert heard["instrument"]["chance"] == pytest.approx(39 / 119)
    assert abs(heard["loudness"]["agreement"] - heard["loudness"]["chance"]) < 0.1


def test_a_paired_comparison_counts_what_one_model_fixes_and_breaks():
    report = compare(np.array([1, 1, 0, 1, 0, 1]), np.array([1, 0, 1, 0, 0, 1]), n_bootstrap=200)
    assert (report["fixed"], report["broken"]) == (2, 1)
    assert report["difference"]["value"] == pytest.approx(1 / 6)
    assert report["difference"]["ci_low"] <= 1 / 6 <= report["difference"]["ci_high"]


@needs_demo
def test_sets_are_pooled_with_each_sets_share_and_a_model_compared_with_another(tmp_path, capsys):
    import data.demo

    out = tmp_path / "report.json"
    assert main(["--queries", str(VALIDATION_2), "--queries", str(VALIDATION_3), "--exact",
                 "--against", str(data.demo.DEMO_MODEL_DIR), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    per_set = report["per_set"]
    assert [entry["queries"] for entry in per_set.values()] == [len(read_queries(VALIDATION_2)),
                                                                len(read_queries(VALIDATION_3))]
    assert report["queries"] == sum(entry["queries"] for entry in per_set.values())
    pooled = sum(entry["passed"] * entry["queries"] for entry in per_set.values()) / report["queries"]
    assert report["passed"]["value"] == pytest.approx(pooled)
    assert report["queries"] - len(report["misses"]) == round(pooled * report["queries"])
    against = report["against"]  # the same model: nothing fixed, nothing broken
    assert (against["fixed"], against["broken"], against["difference"]["value"]) == (0, 0, 0.0)
    assert against["passed"]["value"] == report["passed"]["value"]
    assert "paraphrase_validation_3.jsonl:" in capsys.readouterr().out
    assert main(["--queries", str(VALIDATION_2), "--queries", str(VALIDATION_2)]) == 2
    assert "share a query" in capsys.readouterr().err
