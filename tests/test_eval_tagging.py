"""`muqsearch eval --tagging`: known answers, per-tag figures recomputed from dumped scores, the
MagnaTagATune annotation layout, prompts averaged, bad rows listed and skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import average_precision_score, roc_auc_score

from app.cli import main
from evaluation.metrics import tagging_metrics
from evaluation.tagging import load_tag_set, prompts_for, read_vocabulary, tag_scores


def test_scores_that_encode_the_tags_rank_perfectly_random_ones_at_chance():
    rng = np.random.default_rng(0)
    truth = rng.random((1000, 5)) < np.array([0.1, 0.2, 0.3, 0.5, 0.05])
    results, per_tag, chance = tagging_metrics(truth + 0.1 * rng.random(truth.shape), truth, list("abcde"), n_bootstrap=100)
    assert results["roc_auc"]["value"] == 1.0 and results["pr_auc"]["value"] == 1.0
    results, per_tag, chance = tagging_metrics(rng.random(truth.shape), truth, list("abcde"), n_bootstrap=100)
    assert abs(results["roc_auc"]["value"] - 0.5) < 0.05 and results["roc_auc"]["ci_low"] < 0.5 < results["roc_auc"]["ci_high"]
    assert chance["pr_auc"] == pytest.approx(truth.mean(axis=0).mean())
    assert abs(results["pr_auc"]["value"] - chance["pr_auc"]) < 0.05
    assert per_tag["d"]["positives"] == int(truth[:, 3].sum())


def test_a_tag_without_positives_is_not_scored():
    truth = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    results, per_tag, _ = tagging_metrics(np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3]]), truth, ["yes", "never"], n_bootstrap=0)
    assert per_tag["never"]["roc_auc"] is None and results["roc_auc"]["value"] == 1.0


def test_prompts_average_per_tag():
    audio = np.array([[1.0, 0.0], [0.0, 1.0]])
    prompts = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]])]
    np.testing.assert_allclose(tag_scores(audio, prompts), [[0.5, 1.0], [0.5, 0.0]])
    assert prompts_for(["rock"], ["{tag} music", "a {tag} song"]) == [["rock music", "a rock song"]]
    with pytest.raises(ValueError, match="placeholder"):
        prompts_for(["rock"], ["music"])


def test_magnatagatune_layout(tmp_path):
    """annotations_final.csv as published: tab-separated, every field quoted, clip_id, tag columns, mp3_path."""
    (tmp_path / "0" / "a").mkdir(parents=True)
    for name in ("one.mp3", "two.mp3"):
        (tmp_path / "0" / "a" / name).write_bytes(b"x")
    header = ["clip_id", "no voice", "singer", "duet", "mp3_path"]
    rows = [["2", "1", "0", "0", "0/a/one.mp3"], ["6", "0", "1", "1", "0/a/two.mp3"],
            ["10", "0", "1", "0", "0/a/missing.mp3"], ["12", "0", "yes", "0", "0/a/one.mp3"]]
    text = "\n".join("\t".join(f'"{v}"' for v in row) for row in [header] + rows) + "\n"
    (tmp_path / "annotations_final.csv").write_text(text)
    tag_set = load_tag_set(tmp_path / "annotations_final.csv", tmp_path)
    assert [p.name for p in tag_set.audio] == ["one.mp3", "two.mp3"]
    assert tag_set.tags == [{"no voice"}, {"singer", "duet"}]
    assert {e.item: e.reason for e in tag_set.excluded} == {
        "annotations_final.csv:4": "audio file not found", "annotations_final.csv:5": "tag column 'singer' is not 0 or 1"}


def test_vocabulary_file(tmp_path):
    (tmp_path / "v.txt").write_text("# tags\nrock\n\njazz\nrock\n")
    assert read_vocabulary(tmp_path / "v.txt") == ["rock", "jazz"]


@pytest.fixture(scope="module")
def tag_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagging")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        wave = (0.1 * rng.standard_normal(24000 * 2)).astype(np.float32)
        sf.write(root / f"c{i}.wav", wave, 24000)
        lines.append(json.dumps({"audio": f"c{i}.wav", "tags": ["piano"] + (["drums"] if i % 2 else []) + (["calm"] if i < 3 else [])}))
    lines.insert(1, json.dumps({"audio": "gone.wav", "tags": ["piano"]}))  # line 2
    lines.insert(3, json.dumps({"audio": "c0.wav", "tags": "piano"}))  # line 4
    (root / "broken.wav").write_bytes(b"not audio at all" * 20)
    lines.append(json.dumps({"audio": "broken.wav", "tags": ["piano"]}))  # line 11: found, not decodable
    (root / "set.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_cli_tagging_report_and_dump_recompute(tag_set, tiny_model_dir, capsys, tmp_path):
    out, dump = tmp_path / "r.json", tmp_path / "d"
    code = main(["eval", "--tagging", str(tag_set / "set.jsonl"), "--model", str(tiny_model_dir),
                 "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "50", "--prompt", "{tag} music",
                 "--prompt", "a recording of {tag}", "--out", str(out), "--dump-scores", str(dump)])
    table = capsys.readouterr().out
    assert code == 0 and "ROC-AUC" in table
    report = json.loads(out.read_text())
    assert report["prompts"] == ["{tag} music", "a recording of {tag}"]
    excluded = {e["item"]: e["reason"] for e in report["excluded"]}
    assert set(excluded) == {"set.jsonl:2", "set.jsonl:4", "set.jsonl:11"} and "decode" in excluded["set.jsonl:11"]
    assert report["per_tag"]["piano"]["roc_auc"] is None  # every clip has it: nothing to rank
    assert report["sizes"]["tagging"]["macro"] == {"clips": 8, "tags": 3, "tags_scored": 2}
    saved = np.load(dump / "tagging.npz")
    tags = list(saved["tags"])
    for tag in ("calm", "drums"):
        t = tags.index(tag)
        assert report["per_tag"][tag]["roc_auc"] == pytest.approx(roc_auc_score(saved["truth"][:, t], saved["scores"][:, t]))
        assert report["per_tag"][tag]["pr_auc"] == pytest.approx(average_precision_score(saved["truth"][:, t], saved["scores"][:, t]))
    recomputed, _, _ = tagging_metrics(saved["scores"], saved["truth"], tags, n_bootstrap=50, seed=0)
    assert recomputed == report["results"]["tagging"]["macro"]  # values and CIs
    macro = np.mean([report["per_tag"][t]["roc_auc"] for t in ("calm", "drums")])
    assert report["results"]["tagging"]["macro"]["roc_auc"]["value"] == pytest.approx(macro)
    assert report["chance"]["tagging"]["macro"] == {"roc_auc": 0.5, "pr_auc": pytest.approx((3 / 8 + 4 / 8) / 2)}


def test_cli_tagging_needs_a_text_tower(tag_set, capsys):
    assert main(["eval", "--tagging", str(tag_set / "set.jsonl"), "--baseline", "mel", "--no-cache"]) == 2
    assert "text tower" in capsys.readouterr().err


def test_auc_functions_match_sklearn_with_ties():
    from evaluation.metrics import average_precision, roc_auc

    rng = np.random.default_rng(5)
    for _ in range(20):
        truth = rng.random(50) < 0.3
        truth[:2] = [True, False]
        scores = np.round(rng.random(50), 1)  # many ties
        assert roc_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores))
        assert average_precision(truth, scores) == pytest.approx(average_precision_score(truth, scores))
