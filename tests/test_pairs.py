"""One reader of (audio, caption) pair files: training and evaluation accept the same rows and report the
same bad ones, by file and line."""

from __future__ import annotations

import json

from evaluation.datasets import load_dataset
from muq_model.training import read_pairs

ROWS = [
    json.dumps({"audio_path": "a.wav", "text": "calm piano"}),
    json.dumps({"file": "b.wav", "captions": ["loud drums", " fast drums "], "split": "train"}),
    json.dumps({"audio": "c.wav", "caption": "soft strings"}),
    "{not json",
    json.dumps({"text": "no audio here"}),
    json.dumps({"path": "d.wav", "captions": []}),
    json.dumps(["a", "list"]),
    json.dumps({"audio_path": "e.wav"}),
]
EXCLUDED = {
    "pairs.jsonl:4": "not valid JSON",
    "pairs.jsonl:5": "no audio path (one of the fields audio_path, audio, path, file)",
    "pairs.jsonl:6": "no caption (field 'text', 'caption' or a 'captions' list of strings)",
    "pairs.jsonl:7": "a record must be a JSON object, got list",
    "pairs.jsonl:8": "no caption (field 'text', 'caption' or a 'captions' list of strings)",
}


def write_set(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav"):
        (tmp_path / name).write_bytes(b"only the loaders run: the file must exist")
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(ROWS) + "\n")
    return path


def test_training_and_evaluation_read_the_same_pairs_and_skip_the_same_rows(tmp_path, capsys):
    path = write_set(tmp_path)
    expected = [("a.wav", "calm piano"), ("b.wav", "loud drums"), ("b.wav", "fast drums"), ("c.wav", "soft strings")]

    items = read_pairs(path)
    assert [(i.audio.name, c) for i in items for c in i.captions] == expected
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(EXCLUDED)
    for line, (where, reason) in zip(printed, EXCLUDED.items(), strict=True):
        assert line.startswith(f"skipped {where}: {reason}")

    data = load_dataset(path)
    assert data.format == "pairs"
    assert [(p.audio.name, p.text) for p in data.pairs] == expected
    reasons = {e.item: e.reason for e in data.excluded}
    assert set(reasons) == set(EXCLUDED)
    assert all(reasons[where].startswith(reason) for where, reason in EXCLUDED.items())


def test_a_split_leaves_out_other_rows_without_reporting_them(tmp_path, capsys):
    path = write_set(tmp_path)
    items = read_pairs(path, split="test")  # rows without a split field belong to every split
    assert [i.audio.name for i in items] == ["a.wav", "c.wav"]
    assert "b.wav" not in capsys.readouterr().out
