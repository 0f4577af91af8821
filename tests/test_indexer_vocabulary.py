"""The built-in tag vocabulary file and its loader."""

from __future__ import annotations

import json

import pytest

from data.vocabulary import VocabularyError, load_vocabulary


def test_builtin_vocabulary_has_every_category_with_texts():
    vocabulary = load_vocabulary()
    assert set(vocabulary.categories) == {"genre", "mood", "instrument", "era", "scene"}
    for name, category in vocabulary.categories.items():
        tags = [vocabulary.tags[i] for i in vocabulary.in_category(name)]
        assert len(tags) >= 10 and 1 <= category.top_k < len(tags)
    texts = vocabulary.texts
    assert len(set(texts)) == len(texts)
    assert "jazz music" in texts and "music with piano" in texts and "music for a party" in texts


def write(tmp_path, tags, categories=None):
    path = tmp_path / "vocabulary.json"
    categories = categories or {"genre": {"description": "g", "top_k": 2, "template": "{} music"}}
    path.write_text(json.dumps({"categories": categories, "tags": tags}))
    return path


def test_the_hash_follows_the_content(tmp_path):
    a = load_vocabulary(write(tmp_path, [{"tag": "rock", "category": "genre"}]))
    b = load_vocabulary(write(tmp_path, [{"tag": "pop", "category": "genre"}]))
    assert a.hash != b.hash and a.texts == ["rock music"] and b.texts == ["pop music"]


@pytest.mark.parametrize("tags,message", [
    ([{"tag": "rock", "category": "colour"}], "unknown category 'colour'"),
    ([{"tag": "rock", "category": "genre"}, {"tag": "rock", "category": "genre"}], "repeated"),
    ([{"tag": "rock", "category": "genre"}, {"tag": "x", "category": "genre", "text": "rock music"}], "same text"),
    ([{"category": "genre"}], "needs 'tag' and 'category'"),
])
def test_malformed_entries_are_named(tmp_path, tags, message):
    path = write(tmp_path, tags)
    with pytest.raises(VocabularyError, match=message) as info:
        load_vocabulary(path)
    assert str(path) in str(info.value)


def test_malformed_header(tmp_path):
    path = write(tmp_path, [], categories={"genre": {"description": "no top_k"}})
    with pytest.raises(VocabularyError, match="malformed vocabulary header"):
        load_vocabulary(path)
