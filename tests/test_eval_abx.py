"""`muqsearch eval --abx`: known answers on synthetic embeddings, figures recomputed from dumped scores,
bad rows listed by line and skipped, the mel baseline and a MuQ hidden layer as embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main
from evaluation.abx import Triplet, abx_results, evaluate_abx, load_triplets
from evaluation.metrics import abx_outcomes


def labelled_triplets(n: int, seed: int = 0):
    """Triplets over items whose label is known: X and the `closer` side share a label, the other not."""
    rng = np.random.default_rng(seed)
    triplets, labels = [], {}
    for i in range(n):
        x_label, other = rng.choice(8, size=2, replace=False)
        closer = "a" if rng.random() < 0.5 else "b"
        files = {key: Path(f"t{i}-{key}") for key in "xab"}
        labels[files["x"]] = x_label
        labels[files[closer]] = x_label
        labels[files["b" if closer == "a" else "a"]] = other
        triplets.append(Triplet(f"set:{i + 1}", files["x"], files["a"], files["b"], closer, "even" if i % 2 else "odd"))
    return triplets, labels


def test_an_embedding_that_encodes_the_label_agrees_always_a_random_one_at_chance():
    triplets, labels = labelled_triplets(400)
    rng = np.random.default_rng(1)
    encoded = {f: np.eye(8)[label] + 0.05 * rng.standard_normal(8) for f, label in labels.items()}
    results, chance, sizes, _ = evaluate_abx(triplets, encoded, n_bootstrap=200)
    assert results["all"]["agreement"]["value"] == 1.0 and sizes["all"]["triplets"] == 400
    assert set(results) == {"all", "even", "odd"} and sizes["odd"]["triplets"] == 200
    random = {f: rng.standard_normal(16) for f in labels}
    results, chance, _, _ = evaluate_abx(triplets, random, n_bootstrap=200)
    entry = results["all"]["agreement"]
    assert chance["all"]["agreement"] == 0.5
    assert 0.4 < entry["value"] < 0.6 and entry["ci_low"] < 0.5 < entry["ci_high"]


def test_ties_count_half():
    np.testing.assert_array_equal(abx_outcomes([0.9, 0.1, 0.5], [0.1, 0.9, 0.5]), [1.0, 0.0, 0.5])
    triplets, labels = labelled_triplets(10)
    same = {f: np.ones(4) for f in labels}
    assert evaluate_abx(triplets, same, n_bootstrap=0)[0]["all"]["agreement"]["value"] == 0.5


def tone(path: Path, freq: float, seconds: float = 1.5, seed: int = 0) -> None:
    t = np.arange(int(24000 * seconds)) / 24000
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    sf.write(path, (0.2 * wave).astype(np.float32), 24000)


@pytest.fixture(scope="module")
def tone_set(tmp_path_factory):
    """Tones: low ones near 200 Hz and high ones near 2 kHz; X is always nearer its own register. The
    file also holds bad rows: bad JSON, an unknown `closer`, a missing file, a missing field."""
    root = tmp_path_factory.mktemp("abx")
    for i in range(4):
        tone(root / f"low{i}.wav", 180 + 15 * i, seed=i)
        tone(root / f"high{i}.wav", 1800 + 150 * i, seed=10 + i)
    rows = []
    for i in range(4):
        j = (i + 1) % 4
        rows.append({"x": f"low{i}.wav", "a": f"low{j}.wav", "b": f"high{i}.wav", "closer": "a", "category": "low"})
        rows.append({"x": f"high{i}.wav", "a": f"low{j}.wav", "b": f"high{j}.wav", "closer": "b", "category": "high"})
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "{not json")  # line 3
    lines.insert(4, json.dumps({"x": "low0.wav", "a": "low1.wav", "b": "high0.wav", "closer": "c"}))  # line 5
    lines.append(json.dumps({"x": "low0.wav", "a": "gone.wav", "b": "high0.wav", "closer": "a"}))  # line 11
    lines.append(json.dumps({"x": "low0.wav", "b": "high0.wav", "closer": "a"}))  # line 12
    (root / "triplets.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_bad_rows_are_listed_by_line_and_skipped(tone_set):
    triplets, excluded = load_triplets(tone_set / "triplets.jsonl", tone_set)
    assert len(triplets) == 8
    reasons = {e.item: e.reason for e in excluded}
    assert set(reasons) == {"triplets.jsonl:3", "triplets.jsonl:5", "triplets.jsonl:11", "triplets.jsonl:12"}
    assert "not valid JSON" in reasons["triplets.jsonl:3"] and "'c'" in reasons["triplets.jsonl:5"]
    assert "not found" in reasons["triplets.jsonl:11"] and "a" in reasons["triplets.jsonl:12"]


def test_cli_mel_baseline_report_and_dumped_scores_recompute(tone_set, capsys, tmp_path):
    out, dump = tmp_path / "report.json", tmp_path / "scores"
    code = main(["eval", "--abx", str(tone_set / "triplets.jsonl"), "--baseline", "mel", "--no-cache",
                 "--bootstrap", "100", "--out", str(out), "--dump-scores", str(dump)])
    table = capsys.readouterr().out
    assert code == 0 and "agreement" in table and "triplets.jsonl:5" in table
    report = json.loads(out.read_text())
    assert report["task"] == "abx" and report["embedding"]["kind"] == "mel-statistics"
    assert len(report["excluded"]) == 4 and report["sizes"]["abx"]["all"]["triplets"] == 8
    assert report["results"]["abx"]["all"]["agreement"]["value"] == 1.0  # registers 3 octaves apart
    scores = np.load(dump / "abx.npz")
    recomputed, _, _ = abx_results(scores["closer"], scores["category"], scores["sim_a"], scores["sim_b"],
                                   n_bootstrap=100, seed=0)
    assert recomputed == report["results"]["abx"]
    near = np.where(scores["closer"] == "a", scores["sim_a"], scores["sim_b"])
    far = np.where(scores["closer"] == "a", scores["sim_b"], scores["sim_a"])
    assert report["results"]["abx"]["low"]["agreement"]["value"] == pytest.approx(np.mean((near > far)[scores["category"] == "low"]))


def test_cli_layer_uses_hidden_states_and_checks_the_range(tone_set, tiny_model_dir, capsys, tmp_path):
    common = ["eval", "--abx", str(tone_set / "triplets.jsonl"), "--model", str(tiny_model_dir),
              "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0", "--json"]
    assert main(common + ["--layer", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedding"]["kind"] == "hidden-states" and report["embedding"]["layer"] == 1
    assert "hidden-states" in report["embedding"]["fingerprint"]["clip_policy"]
    assert main(common + ["--layer", "99"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(common) == 0  # the MuQ-MuLan audio vector
    assert json.loads(capsys.readouterr().out)["embedding"]["kind"] == "muq-mulan-audio"


def test_exactly_one_mode(capsys):
    assert main(["eval"]) == 2
    assert main(["eval", "pairs.jsonl", "--abx", "t.jsonl"]) == 2
    assert "one of DATASET" in capsys.readouterr().err
