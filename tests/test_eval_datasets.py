"""Evaluation loaders and the relevance/score matrices built from them (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.datasets import load_dataset
from evaluation.protocol import field_matrices


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"placeholder: loaders only check that the file exists")
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_wikimt_records_find_audio_by_path_or_id_and_report_what_they_exclude(tmp_path):
    audio = tmp_path / "audio"
    touch(audio / "a.flac")
    touch(audio / "sub" / "b.wav")
    touch(audio / "c3.ogg")
    dataset = write_jsonl(tmp_path / "wikimt.jsonl", [
        {"id": "a1", "audio": "a.flac", "title": "A", "background": "history A", "scene": "scene A"},
        {"id": "b2", "audio_path": "sub/b.wav", "analysis": "analysis B", "description": "desc B"},
        {"id": "c3", "background": "history C", "analysis": "", "description": "desc C"},
        {"id": "d4", "background": "history D"},  # no audio file d4.*
        {"id": "e5", "audio": "missing.mp3", "scene": "scene E"},
        {"id": "f6", "audio": "a.flac", "genre": "jazz"},  # no text at all
        "{not json",
        "[1, 2]",
    ])
    data = load_dataset(dataset, audio_root=audio)
    assert data.format == "wikimt"
    assert data.fields == ("background", "analysis", "description", "scene")
    got = {(p.item, p.field): (p.audio.relative_to(audio).as_posix(), p.text) for p in data.pairs}
    assert got == {
        ("a1", "background"): ("a.flac", "history A"),
        ("a1", "scene"): ("a.flac", "scene A"),
        ("b2", "analysis"): ("sub/b.wav", "analysis B"),
        ("b2", "description"): ("sub/b.wav", "desc B"),
        ("c3", "background"): ("c3.ogg", "history C"),
        ("c3", "description"): ("c3.ogg", "desc C"),
    }
    reasons = {e.item: e.reason for e in data.excluded}
    assert set(reasons) == {"d4", "e5", "f6", "wikimt.jsonl:7", "wikimt.jsonl:8"}
    assert "audio file not found" in reasons["d4"] and "d4" in reasons["d4"]
    assert "audio file not found" in reasons["e5"]
    assert "no text" in reasons["f6"]
    assert "not valid JSON" in reasons["wikimt.jsonl:7"]
    assert "JSON object" in reasons["wikimt.jsonl:8"]


def test_field_selection_keeps_the_whole_audio_pool(tmp_path):
    touch(tmp_path / "x.wav")
    touch(tmp_path / "y.wav")
    dataset = write_jsonl(tmp_path / "set.jsonl", [
        {"id": "x", "audio": "x.wav", "scene": "s", "analysis": "a"},
        {"id": "y", "audio": "y.wav", "analysis": "only analysis"},
    ])
    data = load_dataset(dataset, fields=["scene"])
    assert data.fields == ("scene",)
    rng = np.random.default_rng(0)
    matrices = field_matrices(
        data, {p.audio: rng.standard_normal(3) for p in data.pairs}, {p.text: rng.standard_normal(3) for p in data.pairs}
    )
    assert [(m.direction, m.field, m.scores.shape) for m in matrices] == [
        ("text_to_music", "scene", (1, 2)),  # ranked against x and y, though y has no scene text
        ("music_to_text", "scene", (1, 1)),
    ]
    with pytest.raises(ValueError, match="no usable text in field.*background.*fields with text: analysis, scene"):
        load_dataset(dataset, fields=["background", "scene"])
    with pytest.raises(ValueError, match="no usable text in field.*background.*fields with text: analysis, scene"):
        load_dataset(dataset, fields=["background", "scene"])


def test_pairs_csv_with_groups_and_fields(tmp_path):
    for name in ("p.wav", "q.wav", "r.wav"):
        touch(tmp_path / name)
    (tmp_path / "pairs.csv").write_text(
        "audio_path,text,group,field\n"
        "p.wav,calm piano,,\n"
        "q.wav,calm piano,,\n"  # one text, two audio
        "r.wav,fast drums,g1,mood\n"
        "p.wav,fast drums again,g1,mood\n"
        ",no audio,,\n"
        "gone.wav,lost,,\n"
    )
    data = load_dataset(tmp_path / "pairs.csv")
    assert data.format == "pairs"
    assert data.fields == ("text", "mood")
    assert [(p.audio.name, p.text, p.group, p.field) for p in data.pairs] == [
        ("p.wav", "calm piano", None, "text"),
        ("q.wav", "calm piano", None, "text"),
        ("r.wav", "fast drums", "g1", "mood"),
        ("p.wav", "fast drums again", "g1", "mood"),
    ]
    reasons = {e.item: e.reason for e in data.excluded}
    assert reasons == {"pairs.csv:6": "no audio path (one of the fields audio_path, audio, path, file)",
                       "pairs.csv:7": "audio file not found"}


def test_pairs_jsonl_is_detected_by_its_text_key(tmp_path):
    touch(tmp_path / "p.wav")
    dataset = write_jsonl(tmp_path / "pairs.jsonl", [{"audio_path": "p.wav", "text": "calm piano"}])
    data = load_dataset(dataset)
    assert data.format == "pairs" and data.fields == ("text",)


def test_missing_dataset_and_empty_dataset_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        load_dataset(tmp_path / "nope.jsonl")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "z", "background": "text"}])
    with pytest.raises(ValueError, match="no usable .audio, text. pairs; 1 records excluded"):
        load_dataset(empty)


def test_relevance_is_explicit_and_duplicates_are_merged(tmp_path):
    for name in ("p.wav", "q.wav", "r.wav", "s.wav"):
        touch(tmp_path / name)
    (tmp_path / "pairs.csv").write_text(
        "audio_path,text,group\n"
        "p.wav,calm piano,\n"
        "q.wav,calm piano,\n"  # the same text for two recordings
        "q.wav,soft keys,\n"  # a second text for q
        "r.wav,loud drums,g\n"
        "s.wav,big beat,g\n"  # r and s share a group: both texts fit both
        "p.wav,calm piano,\n"  # an exact repeat changes nothing
    )
    data = load_dataset(tmp_path / "pairs.csv")
    dim = 4
    rng = np.random.default_rng(0)
    audio_vectors = {p.audio: rng.standard_normal(dim).astype(np.float32) * 3 for p in data.pairs}
    text_vectors = {p.text: rng.standard_normal(dim).astype(np.float32) for p in data.pairs}
    t2m, m2t = field_matrices(data, audio_vectors, text_vectors)
    assert t2m.direction == "text_to_music" and m2t.direction == "music_to_text"
    # rows: calm piano, soft keys, loud drums, big beat; columns: p, q, r, s
    assert t2m.relevant.astype(int).tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert m2t.relevant.tolist() == t2m.relevant.T.tolist()
    assert t2m.query_ids.tolist() == ["pairs.csv:2", "pairs.csv:4", "pairs.csv:5", "pairs.csv:6"]
    assert t2m.candidate_ids.tolist() == ["pairs.csv:2", "pairs.csv:3", "pairs.csv:5", "pairs.csv:6"]
    # cosine: audio vectors are renormalised, so scores are text . unit(audio)
    texts = ["calm piano", "soft keys", "loud drums", "big beat"]
    audio = np.stack([audio_vectors[tmp_path / n] for n in ("p.wav", "q.wav", "r.wav", "s.wav")])
    expected = np.stack([text_vectors[t] for t in texts]) @ (audio / np.linalg.norm(audio, axis=1, keepdims=True)).T
    np.testing.assert_allclose(t2m.scores, expected, rtol=1e-6)
    dot, _ = field_matrices(data, audio_vectors, text_vectors, similarity="dot")
    np.testing.assert_allclose(dot.scores, np.stack([text_vectors[t] for t in texts]) @ audio.T, rtol=1e-6)


def test_music_to_text_only_queries_audio_with_text_in_the_field(tmp_path):
    for name in ("a.wav", "b.wav"):
        touch(tmp_path / name)
    dataset = write_jsonl(tmp_path / "w.jsonl", [
        {"id": "a", "audio": "a.wav", "scene": "rain", "analysis": "sonata"},
        {"id": "b", "audio": "b.wav", "analysis": "fugue"},
    ])
    data = load_dataset(dataset)
    rng = np.random.default_rng(1)
    matrices = field_matrices(
        data, {p.audio: rng.standard_normal(3) for p in data.pairs}, {p.text: rng.standard_normal(3) for p in data.pairs}
    )
    shapes = {(m.direction, m.field): m.scores.shape for m in matrices}
    # scene: one text ranked against both audio (the pool); only audio "a" asks for a scene text
    assert shapes[("text_to_music", "scene")] == (1, 2)
    assert shapes[("music_to_text", "scene")] == (1, 1)
    assert shapes[("music_to_text", "analysis")] == (2, 2)
