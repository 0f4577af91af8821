"""The shipped demo model: small, loads offline through from_pretrained, and reproduces its model card's
held-out figures (and the quality targets) through the evaluation harness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.demo import DEMO_EVAL_SET, DEMO_MODEL_DIR, EXAMPLE_QUERIES, load_records

REPORT = DEMO_MODEL_DIR / "eval_test.json"  # `muqsearch eval data/demo/eval_test.jsonl --out ...` at release


def test_demo_model_is_small_and_loads_offline():
    from muq_model import MuQMuLan

    weights = DEMO_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 30e6
    model = MuQMuLan.from_pretrained(DEMO_MODEL_DIR)
    assert model.has_tokenizer and model.dim == 512 and model.sample_rate == 24000
    vectors = model.embed_text(["slow sad piano", "fast happy flute"])
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    assert (DEMO_MODEL_DIR / "MODEL_CARD.md").is_file()


@pytest.mark.slow
def test_shipped_figures_reproduce_and_meet_the_targets(tmp_path):
    from evaluation.datasets import load_dataset
    from evaluation.protocol import evaluate
    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(DEMO_MODEL_DIR).eval()
    result = evaluate(load_dataset(DEMO_EVAL_SET), model, progress=False)
    shipped = json.loads(REPORT.read_text())["results"]
    for direction in ("text_to_music", "music_to_text"):
        (field,) = result.results[direction]
        got, recorded = result.results[direction][field], shipped[direction][field]
        for metric in ("r@1", "r@10", "mrr"):
            assert got[metric]["value"] == pytest.approx(recorded[metric]["value"], abs=1e-6), (direction, metric)
        assert got["r@10"]["value"] >= 0.8, direction


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known: the shipped demo model ranks slow minor *guitar* above piano for "
                   "'slow sad piano' (short queries are unlike the long training captions); the other examples pass")
def test_example_queries_find_clips_with_their_attributes():
    """Over the whole demo library, each example query's top 3 clips carry its attributes."""
    from indexer.audio import load_audio
    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(DEMO_MODEL_DIR).eval()
    records = load_records()
    audio = model.embed_audio([load_audio(r["path"], sample_rate=24000) for r in records]).numpy()
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    text = model.embed_text([query for query, _ in EXAMPLE_QUERIES]).numpy()
    for (query, expected), scores in zip(EXAMPLE_QUERIES, text @ audio.T, strict=True):
        top = [records[i]["attributes"] for i in np.argsort(-scores)[:3]]
        matching = sum(all(a[k] == v for k, v in expected.items()) for a in top)
        assert matching >= 2, (query, top)
