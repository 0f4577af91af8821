"""Calibrated confidence (indexer.calibration): the null-distribution arithmetic, and on the demo world, through
the real CLI and the real HTTP API, "no good match" for what the world does not hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.confidence import QUERIES, read_queries
from indexer import calibration
from indexer.calibration import Calibration, NullBank, load_null_texts, verdict
from tests.helpers import needs_demo


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_confidence_is_the_share_of_unrelated_texts_beaten_on_that_track():
    rng = np.random.default_rng(0)
    tracks = _unit(rng.normal(size=(5, 8)).astype(np.float32))
    bank = NullBank(_unit(rng.normal(size=(40, 8)).astype(np.float32)),
                    _unit(rng.normal(size=(40, 6)).astype(np.float32)),
                    _unit(rng.normal(size=(3, 6)).astype(np.float32)))
    cal = Calibration.build(bank)
    null_on_12 = bank.vectors @ tracks[2]
    score = float(np.sort(null_on_12)[29]) + 1e-6  # beats exactly 30 of the 40 null texts on track 12
    assert cal.confidences(1.0, tracks[[2]], [score])[0] == pytest.approx(30 / 40)
    assert cal.confidences(0.5, tracks[[2]], [score])[0] == pytest.approx(15 / 40)
    assert cal.confidences(1.0, tracks[[2]], [2.0])[0] == 1.0 and cal.confidences(1.0, tracks[[2]], [-2.0])[0] == 0.0
    assert cal.confidences(1.0, np.zeros((0, 8), np.float32), []).shape == (0,)  # an answer with no result
    # a vocabulary text is as known as can be; a null text's own twin is not
    assert cal.known(bank.known_sentences[0]) > cal.known(bank.sentences[0])


def test_verdict_thresholds():
    assert verdict(None) == "none"
    assert verdict(calibration.WEAK - 1e-9) == "none"
    assert verdict(calibration.WEAK) == "weak"
    assert verdict(calibration.STRONG) == "strong"


def test_the_evaluation_queries_are_not_in_the_null_bank():
    bank = {t.casefold() for t in load_null_texts()}
    queries = read_queries(QUERIES)
    assert len(bank) >= 200
    assert sum(inside for _, inside in queries) == 50 and sum(not inside for _, inside in queries) == 50
    assert not [q for q, _ in queries if q.casefold() in bank]


def test_a_malformed_query_line_is_named(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"query": "piano", "in_world": true}\n{"text": "x"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2"):
        read_queries(bad)


def test_the_null_bank_is_embedded_once_per_library_and_model(fresh_app_library, tiny_model, monkeypatch):
    from app.search import SearchService
    from indexer.text_collections import delete_collection
    from indexer.vectors import Library

    with Library.open(fresh_app_library.directory) as library:  # indexing stored the bank: drop it
        for name in (calibration.NULL_COLLECTION, calibration.NULL_SENTENCE_COLLECTION,
                     calibration.VOCABULARY_SENTENCE_COLLECTION):
            assert delete_collection(library.catalog, name)
    calls = []
    real = calibration.embed_texts
    monkeypatch.setattr(calibration, "embed_texts", lambda model, texts: calls.append(len(texts)) or real(model, texts))
    for _ in range(2):  # a restart reads the bank from the catalog
        service = SearchService(fresh_app_library.directory, tiny_model)
        results = service.search("calm piano", k=3)
        service.close()
        assert all(0.0 <= r.confidence <= 1.0 for r in results)
    assert len(calls) == 2  # the null texts and the vocabulary, the first time only


# --------------------------------------------------------------------------------------------------
# The demo world


OUT_OF_WORLD = ("a podcast interview about politics", "rap vocals over a trap beat")


@needs_demo
def test_the_cli_says_no_good_match_for_what_the_demo_world_lacks(demo_library, capsys):
    from app.cli import main

    setup, _ = demo_library
    library = ["--library", str(setup.library_dir)]
    for query in OUT_OF_WORLD:
        assert main([*library, "--json", "search", query, "-k", "5"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["verdict"] == "none", (query, answer)
        assert main([*library, "search", query, "-k", "3"]) == 0
        assert "no good match" in capsys.readouterr().out
    assert main([*library, "--json", "search", "slow sad piano", "-k", "5"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["verdict"] in ("strong", "weak")
    assert answer["results"][0]["confidence"] >= calibration.WEAK


@needs_demo
def test_the_api_gives_the_same_verdicts(demo_api):
    client, service = demo_api
    for query in OUT_OF_WORLD:
        assert client.predict(query, 5, False, "", api_name="/search")["verdict"] == "none"
    answer = client.predict("slow sad piano", 5, False, "", api_name="/search")
    assert answer["verdict"] in ("strong", "weak")
    page = service.search("slow sad piano", 5)
    assert [r["track_id"] for r in answer["results"]] == [r.track_id for r in page]
    assert [r["confidence"] for r in answer["results"]] == [round(r.confidence, 4) for r in page]
