"""`muqsearch eval --probe`: known answers, a fixed seeded split, figures recomputed from dumped
predictions, per-layer probes of a MuQ encoder, the world's labels file as input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import f1_score

from app.cli import main
from data.instruments import WORLD_DIR, WORLD_LABELS, load_labels
from evaluation.metrics import classification_metrics
from evaluation.probe import evaluate_probe, load_probe_set, split


def test_features_that_encode_the_label_probe_perfectly_random_ones_at_chance():
    rng = np.random.default_rng(0)
    labels = [str(v) for v in rng.integers(0, 4, 400)]
    encoded = np.eye(4)[[int(v) for v in labels]] + 0.1 * rng.standard_normal((400, 4))
    noise = rng.standard_normal((400, 8))
    results, chance, sizes, scores, rare = evaluate_probe({"encoded": encoded, "noise": noise}, labels, n_bootstrap=100)
    assert results["encoded"]["accuracy"]["value"] == 1.0 and results["encoded"]["macro_f1"]["value"] == 1.0
    assert results["noise"]["accuracy"]["ci_low"] < 0.33 and results["noise"]["accuracy"]["value"] < 0.4
    assert sizes["noise"] == {"train": 280, "test": 120, "classes": 4} and rare == []
    truth, predicted = scores["truth"], scores["predicted/noise"]
    assert results["noise"]["accuracy"]["value"] == pytest.approx(np.mean(truth == predicted))
    assert results["noise"]["macro_f1"]["value"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    counts = np.unique(truth, return_counts=True)[1]
    assert chance["noise"]["accuracy"] == pytest.approx(counts.max() / counts.sum())


def test_split_is_fixed_stratified_and_leaves_out_singletons():
    labels = ["a"] * 10 + ["b"] * 10 + ["c"]
    train, test, rare = split(labels, seed=3)
    again = split(labels, seed=3)
    np.testing.assert_array_equal(train, again[0])
    assert rare == ["c"] and 20 not in np.concatenate([train, test])
    assert sorted(labels[i] for i in test) == ["a"] * 3 + ["b"] * 3
    assert not np.array_equal(test, split(labels, seed=4)[1])
    with pytest.raises(ValueError, match="two labels"):
        split(["a", "a", "b"])


def test_macro_f1_counts_every_test_label():
    results, chance = classification_metrics(np.array(["a", "a", "b", "b"]), np.array(["a", "a", "a", "a"]), n_bootstrap=0)
    assert results["accuracy"]["value"] == 0.5 and results["macro_f1"]["value"] == pytest.approx((2 * 0.5 / 1.5 + 0) / 2)
    assert chance["accuracy"] == 0.5


def test_world_labels_file_becomes_probe_rows():
    records = load_labels()
    family = load_probe_set(WORLD_LABELS, WORLD_DIR, "family")
    assert len(family.audio) == sum(not s["is_drum"] for r in records for s in r["stems"]) and not family.excluded
    assert set(family.labels) <= {s.get("family") for r in records for s in r["stems"]}
    mode = load_probe_set(WORLD_LABELS, WORLD_DIR, "mode")
    assert mode.labels == [r["mode"] for r in records]
    with pytest.raises(ValueError, match="--task"):
        load_probe_set(WORLD_DIR / "probe_mode.jsonl", WORLD_DIR, "mode")


@pytest.fixture(scope="module")
def probe_set(tmp_path_factory):
    """Low and high tones (label = register), plus a row with a missing file and one without a label."""
    root = tmp_path_factory.mktemp("probe")
    lines = []
    for i in range(12):
        label = "high" if i % 2 else "low"
        freq = (1600 if i % 2 else 160) * (1 + 0.05 * i)
        t = np.arange(24000) / 24000
        sf.write(root / f"t{i}.wav", (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 24000)
        lines.append(json.dumps({"audio": f"t{i}.wav", "label": label}))
    lines.insert(2, json.dumps({"audio": "gone.wav", "label": "low"}))
    lines.insert(5, json.dumps({"audio": "t0.wav"}))
    (root / "probe.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_cli_probe_per_layer_and_embedding_with_dumped_predictions(probe_set, tiny_model, tiny_model_dir, capsys, tmp_path):
    out, dump = tmp_path / "r.json", tmp_path / "d"
    code = main(["eval", "--probe", str(probe_set / "probe.jsonl"), "--model", str(tiny_model_dir),
                 "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "50", "--out", str(out), "--dump-scores", str(dump)])
    assert code == 0 and "macro-F1" in capsys.readouterr().out
    report = json.loads(out.read_text())
    groups = list(report["results"]["probe"])
    n_layers = tiny_model.config.audio_model.muq.encoder_depth + 1  # h0 (the stem's output) .. the last
    assert groups == [f"layer {i}" for i in range(n_layers)] + ["embedding"]
    assert {e["item"] for e in report["excluded"]} == {"probe.jsonl:3", "probe.jsonl:6"}
    saved = np.load(dump / "probe.npz")
    for group in groups:
        results, chance = classification_metrics(saved["truth"], saved[f"predicted/{group}"], n_bootstrap=50, seed=0)
        assert results == report["results"]["probe"][group] and chance == report["chance"]["probe"][group]
        accuracy = np.mean(saved["truth"] == saved[f"predicted/{group}"])
        assert report["results"]["probe"][group]["accuracy"]["value"] == pytest.approx(accuracy)
    assert main(["eval", "--probe", str(probe_set / "probe.jsonl"), "--baseline", "mel", "--no-cache", "--json"]) == 0
    mel = json.loads(capsys.readouterr().out)
    assert list(mel["results"]["probe"]) == ["mel-statistics"]
    assert mel["results"]["probe"]["mel-statistics"]["accuracy"]["value"] == 1.0  # registers a decade apart


def test_cli_probe_of_a_standalone_muq_checkpoint_every_layer_no_audio_vector(probe_set, capsys, tmp_path):
    """A `pretrain` output (or an untrained MuQ saved with save_pretrained) is probed layer by layer; it has
    no audio vector, so an ABX without --layer is a user error naming --layer; different weights never
    share cached vectors."""
    import torch

    from evaluation.embedders import HiddenStates
    from muq_model import MuQ
    from muq_model.pretraining import preset

    torch.manual_seed(0)
    muq = MuQ(*preset("tiny")).eval()
    directory = muq.save_pretrained(tmp_path / "muq")
    cache = str(tmp_path / "cache")
    assert main(["eval", "--probe", str(probe_set / "probe.jsonl"), "--model", str(directory), "--cache-dir", cache,
                 "--bootstrap", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["results"]["probe"]) == [f"layer {i}" for i in range(muq.config.encoder_depth + 1)]
    assert report["embedding"]["kind"] == "hidden-states"
    triplet = json.dumps({"x": "t0.wav", "a": "t2.wav", "b": "t1.wav", "closer": "a", "category": "register"})
    (probe_set / "abx.jsonl").write_text(triplet + "\n")
    assert main(["eval", "--abx", str(probe_set / "abx.jsonl"), "--model", str(directory), "--cache-dir", cache]) == 2
    assert "--layer" in capsys.readouterr().err
    assert main(["eval", "--abx", str(probe_set / "abx.jsonl"), "--model", str(directory), "--layer", "1",
                 "--cache-dir", cache, "--bootstrap", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"]["abx"]["all"]["agreement"]["value"] in (0.0, 0.5, 1.0)
    other = MuQ(*preset("tiny"))
    assert HiddenStates.of_muq(other, "x").fingerprint() != HiddenStates.of_muq(muq, "x").fingerprint()
