"""The built-in tag vocabulary file and its loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

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


def test_the_vocabulary_follows_the_model(tiny_model):
    """The demo model declares the demo world: it tags with that world's own attribute words; any other
    model (the tiny test model, MuQ-MuLan-large) with the built-in vocabulary."""
    import data.demo
    from data.demo.captions import ATTRIBUTES
    from evaluation.demo_tags import clip_tags
    from indexer.autotag import vocabulary_info, vocabulary_path

    assert vocabulary_info(tiny_model)["name"] == "built-in"
    demo = vocabulary_path(data.demo.DEMO_MODEL_DIR)
    assert demo == data.demo.DEMO_DIR / "vocabulary.json"
    tags = {t.tag for t in load_vocabulary(demo).tags}
    every_value = {a: v for a, values in ATTRIBUTES.items() for v in values}.items()
    assert set().union(*(clip_tags({a: v}) for a, v in every_value)) <= tags  # every attribute has its tag


@pytest.mark.skipif(not (Path(__file__).parents[1] / "data/demo/model/config.json").is_file(),
                    reason="no demo model in this checkout")
def test_demo_tags_shown_are_mostly_true_on_the_held_out_split(tmp_path):
    """The tags the prebuilt demo library stores and the page shows, against the test clips' attributes."""
    import shutil

    import data.demo
    from data.demo.build_library import CATALOG
    from evaluation.demo_tags import evaluate
    from indexer.autotag import AutoTagger
    from indexer.catalog import Catalog, Track, TrackTag, from_blob
    from muq_model import MuQMuLan

    shutil.copy(data.demo.DEMO_PREBUILT_DIR / CATALOG, tmp_path / CATALOG)
    model = MuQMuLan.from_pretrained(data.demo.DEMO_MODEL_DIR).eval()
    records = data.demo.load_records("test")
    with Catalog(tmp_path / CATALOG, create=False) as catalog:
        report = evaluate(model, catalog, records, n_bootstrap=200)
        tagger = AutoTagger.for_model(model, catalog)
        with catalog.session() as s:  # what is stored is what the tagger says now (the prebuilt is fresh)
            stored = {(Path(p).name, t) for p, t in s.execute(
                select(Track.path, TrackTag.tag).join(TrackTag.track).where(TrackTag.source == "auto"))}
            vectors = dict(s.execute(select(Track.path, Track.embedding)).all())
    assert report["roc_auc"]["value"] > 0.7
    assert report["shown"]["precision"]["value"] >= 0.85 and report["shown"]["shown_per_clip"] >= 0.8
    expected = {(Path(p).name, t.tag) for p, blob in vectors.items() for t in tagger.tags_for(from_blob(blob))}
    assert stored == expected
