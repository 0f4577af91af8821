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


@pytest.fixture(scope="module")
def library_vectors():
    """The shipped demo model and its unit audio vectors over the whole demo library."""
    from indexer.audio import load_audio
    from muq_model import MuQMuLan

    model = MuQMuLan.from_pretrained(DEMO_MODEL_DIR).eval()
    records = load_records()
    audio = model.embed_audio([load_audio(r["path"], sample_rate=24000) for r in records]).numpy()
    return model, records, audio / np.linalg.norm(audio, axis=1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("query, expected", EXAMPLE_QUERIES)
def test_example_query_finds_clips_with_its_attributes(library_vectors, query, expected):
    """Over the whole demo library, at least 2 of the example query's top 3 clips carry all its attributes."""
    model, records, audio = library_vectors
    scores = model.embed_text([query]).numpy()[0] @ audio.T
    top = [records[i]["attributes"] for i in np.argsort(-scores)[:3]]
    assert sum(all(a[k] == v for k, v in expected.items()) for a in top) >= 2, top
