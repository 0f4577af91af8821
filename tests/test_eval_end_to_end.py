"""`muqsearch eval` end to end on a generated set with the tiny model: report layout, dumped scores that
reproduce every figure, an independent recomputation, the embedding cache, and excluded items."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from benchmarks.audio_files import write_audio
from evaluation.datasets import WIKIMT_FIELDS
from evaluation.metrics import DIRECTIONS, METRICS, chance_levels, retrieval_metrics
from indexer.audio import load_audio

N_ITEMS = 6


@pytest.fixture(scope="module")
def generated_set(tmp_path_factory, tiny_model):
    """Six generated tracks with four captions each (WikiMT-X layout), one missing and one corrupt file."""
    root = tmp_path_factory.mktemp("evalset")
    audio = root / "audio"
    audio.mkdir()
    records = []
    for i in range(N_ITEMS):
        write_audio(audio / f"item{i}.flac", seconds=2.0 + i, seed=i)
        records.append({
            "id": f"item{i}", "title": f"Piece {i}", "artists": ["Generator"], "genre": "synthetic",
            "background": f"written in {1900 + 10 * i} for a small ensemble",
            "analysis": f"a chord of three notes, tremolo at speed {i}",
            "description": f"a sustained chord with slow tremolo, number {i}",
            # items 4 and 5 share one scene text: the relevant set of that text holds both recordings
            "scene": "a quiet room at night" if i >= 4 else f"scene number {i}",
        })
    records.append({"id": "missing", "audio": "nowhere.flac", "scene": "never heard"})
    (audio / "broken.flac").write_bytes(b"this is not a flac file at all" * 10)
    records.append({"id": "broken", "audio": "broken.flac", "scene": "never decoded"})
    dataset = root / "wikimt-x.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    model_dir = tiny_model.save_pretrained(root / "model")
    return {"root": root, "dataset": dataset, "audio": audio, "model": model_dir}


def run_cli(capsys, generated_set, *extra):
    args = ["eval", str(generated_set["dataset"]), "--audio-root", str(generated_set["audio"]),
            "--model", str(generated_set["model"]), "--cache-dir", str(generated_set["root"] / "cache"),
            "--bootstrap", "200", *extra]
    code = main(args)
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def first_run(generated_set):
    """The first run (empty cache), with JSON on stdout, the report file and dumped scores."""
    out_file = generated_set["root"] / "report.json"
    dump_dir = generated_set["root"] / "scores"
    code = main(["eval", str(generated_set["dataset"]), "--audio-root", str(generated_set["audio"]),
                 "--model", str(generated_set["model"]), "--cache-dir", str(generated_set["root"] / "cache"),
                 "--bootstrap", "200", "--out", str(out_file), "--dump-scores", str(dump_dir)])
    assert code == 0
    return json.loads(out_file.read_text()), dump_dir


def test_report_has_the_issue_layout(first_run):
    report, _ = first_run
    assert set(report["results"]) == set(DIRECTIONS)
    for direction in DIRECTIONS:
        assert list(report["results"][direction]) == list(WIKIMT_FIELDS)
        for field in WIKIMT_FIELDS:
            for metric in METRICS:
                entry = report["results"][direction][field][metric]
                assert set(entry) == {"value", "ci_low", "ci_high"}
                assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
                if metric.startswith("r@") or metric in ("mrr", "map@10"):
                    assert 0.0 <= entry["value"] <= 1.0
            assert set(report["chance"][direction][field]) == set(METRICS)
    assert report["pool_size"] == N_ITEMS
    assert len(report["dataset_hash"]) == 64
    assert set(report["model_fingerprint"]) >= {"model_id", "config_hash", "weights_hash", "clip_policy"}
    assert "pessimistic" in report["protocol"]["ties"]
    # 6 scene texts are 5 distinct texts; items 4 and 5 share one
    assert report["sizes"]["text_to_music"]["scene"] == {"queries": 5, "candidates": N_ITEMS}
    assert report["sizes"]["music_to_text"]["scene"] == {"queries": N_ITEMS, "candidates": 5}
    excluded = {e["item"]: e for e in report["excluded"]}
    assert set(excluded) == {"missing", "broken"}
    assert "not found" in excluded["missing"]["reason"]
    assert "cannot decode" in excluded["broken"]["reason"] and excluded["broken"]["audio"].endswith("broken.flac")


def test_dumped_scores_reproduce_every_figure(first_run):
    report, dump_dir = first_run
    files = sorted(p.name for p in dump_dir.glob("*.npz"))
    assert files == sorted(f"{d}.{f}.npz" for d in DIRECTIONS for f in WIKIMT_FIELDS)
    for direction in DIRECTIONS:
        for field in WIKIMT_FIELDS:
            with np.load(dump_dir / f"{direction}.{field}.npz", allow_pickle=False) as dump:
                assert dump["scores"].dtype == np.float32 and dump["relevant"].dtype == bool
                assert dump["scores"].shape == dump["relevant"].shape
                assert dump["scores"].shape == (len(dump["query_ids"]), len(dump["candidate_ids"]))
                again = retrieval_metrics(dump["scores"], dump["relevant"], n_bootstrap=200, seed=0)
                chance = chance_levels(dump["relevant"])
            for metric in METRICS:
                assert again[metric] == pytest.approx(report["results"][direction][field][metric]), metric
                assert chance[metric] == pytest.approx(report["chance"][direction][field][metric]), metric


def test_scores_match_an_independent_embedding_of_the_set(first_run, generated_set, tiny_model):
    """Recompute text->music scores for one field straight from the model and the decoder."""
    _, dump_dir = first_run
    with np.load(dump_dir / "text_to_music.description.npz", allow_pickle=False) as dump:
        scores, relevant = dump["scores"], dump["relevant"]
        query_ids, candidate_ids = dump["query_ids"].tolist(), dump["candidate_ids"].tolist()
    assert candidate_ids == [f"item{i}" for i in range(N_ITEMS)]
    records = {r["id"]: r for r in map(json.loads, generated_set["dataset"].read_text().splitlines())}
    waves = [load_audio(generated_set["audio"] / f"{c}.flac") for c in candidate_ids]
    audio = tiny_model.embed_audio(waves).numpy()
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    text = tiny_model.embed_text([records[q]["description"] for q in query_ids]).numpy()
    np.testing.assert_allclose(scores, text @ audio.T, atol=1e-5)
    np.testing.assert_array_equal(relevant, np.eye(N_ITEMS, dtype=bool))


def test_second_run_comes_from_the_cache(first_run, generated_set, capsys, monkeypatch):
    """With the cache filled, nothing is embedded and only the undecodable file is tried again."""
    report, _ = first_run
    import evaluation.protocol
    from muq_model import MuQMuLan

    def decode_only_the_broken_file(path, *args, **kwargs):
        assert path.name == "broken.flac", f"the second run decoded {path}"
        return load_audio(path, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the second run should not embed anything")

    monkeypatch.setattr(evaluation.protocol, "load_audio", decode_only_the_broken_file)
    monkeypatch.setattr(MuQMuLan, "embed_text", refuse)
    monkeypatch.setattr(MuQMuLan, "embed_audio", refuse)
    code, captured = run_cli(capsys, generated_set, "--json")
    assert code == 0
    again = json.loads(captured.out)
    assert again["results"] == report["results"]
    assert again["dataset_hash"] == report["dataset_hash"]


def test_terminal_table_shows_both_directions_fields_cis_and_chance(generated_set, capsys):
    code, captured = run_cli(capsys, generated_set, "--fields", "scene,analysis", "--bootstrap", "50")
    assert code == 0
    table = captured.out
    assert "text -> music" in table and "music -> text" in table
    assert "scene" in table and "analysis" in table and "background" not in table
    for label in ("R@1", "R@5", "R@10", "R@100", "MRR", "mean rank", "median rank", "mAP@10", "chance"):
        assert label in table
    assert "pessimistically" in table
    assert "broken: cannot decode" in table
    assert "[" in table and "]" in table  # confidence intervals


def test_bad_arguments_exit_with_a_clear_message(generated_set, capsys):
    code, captured = run_cli(capsys, generated_set, "--fields", "lyrics")
    assert code == 2
    assert "no usable text in field(s) lyrics" in captured.err
    code = main(["eval", str(generated_set["root"] / "absent.jsonl"), "--model", str(generated_set["model"])])
    assert code == 2
