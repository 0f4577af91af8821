"""Training-only paraphrase captions (data.demo.captions.paraphrase, data.demo.augment): they name only
what the clip is, cover every attribute value, vary, and never touch the held-out test split."""

from __future__ import annotations

import json

import numpy as np

from data.demo import DEMO_CAPTIONS, load_records
from data.demo.augment import augment, main
from data.demo.captions import ATTRIBUTES, PARAPHRASES, TEST_TEMPLATES, paraphrase, typo

CLIP = {"instrument": "flute", "tempo": "fast", "mode": "minor", "loudness": "quiet", "rhythm": "waltz",
        "register": "high", "texture": "drone", "bass": "bassline"}


def test_every_value_has_its_own_phrases():
    assert PARAPHRASES.keys() == ATTRIBUTES.keys()
    for name, values in ATTRIBUTES.items():
        assert PARAPHRASES[name].keys() == set(values), name
        phrases = [p for v in values for p in PARAPHRASES[name][v]]
        assert len(phrases) == len(set(phrases)), f"{name}: a phrase stands for two values"


def test_paraphrases_are_built_only_from_the_clips_own_values():
    rng = np.random.default_rng(0)
    texts = [paraphrase(CLIP, rng, typo_rate=0.0) for _ in range(300)]
    own = {p for name, value in CLIP.items() for p in PARAPHRASES[name][value]}
    others = {p for name, values in PARAPHRASES.items() for v, ps in values.items() if v != CLIP[name] for p in ps
              if all(p not in o and o not in p for o in own)}  # phrases no own phrase contains or is part of
    assert all(any(p in t for p in own) for t in texts)
    assert not [t for t in texts if any(p in t for p in others)]
    assert len(set(texts)) > 150  # varied, not a handful of sentences
    assert not set(texts) & set(TEST_TEMPLATES)


def test_a_typo_changes_one_word_by_one_slip():
    from data.demo.captions import SLIPS

    rng = np.random.default_rng(3)
    kinds = set()
    for _ in range(300):
        text = "slow melancholy piano without drums"
        slipped = typo(text, rng)
        changed = [(a, b) for a, b in zip(text.split(), slipped.split(), strict=True) if a != b]
        assert len(changed) <= 1
        for a, b in changed:  # a letter dropped or doubled, two neighbours swapped or one letter replaced
            assert a[0] == b[0]  # never the first letter
            longer, shorter = (a, b) if len(a) > len(b) else (b, a)
            if len(a) != len(b):
                assert len(longer) == len(shorter) + 1
                assert any(longer[:i] + longer[i + 1:] == shorter for i in range(1, len(longer)))
                kinds.add("length")
                kinds.update({"at the end"} if longer[:-1] == shorter else set())
            elif any(a[:i] + a[i + 1] + a[i] + a[i + 2:] == b for i in range(len(a) - 1)):
                kinds.add("swap")
            else:
                (at,) = [i for i in range(len(a)) if a[i] != b[i]]
                assert b[at] in SLIPS[a[at]]
                kinds.add("replaced")
    assert kinds == {"length", "at the end", "swap", "replaced"}
    assert typo("a big red hat", rng) == "a big red hat"  # no word of four letters: left alone


def test_augment_captions_train_clips_only_and_paths_resolve(tmp_path):
    out = tmp_path / "aug" / "captions.jsonl"
    assert main(["--out", str(out), "--per-clip", "5", "--seed", "4"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    train = {r["id"]: r for r in load_records("train", DEMO_CAPTIONS)}
    assert [r["id"] for r in rows] == list(train)
    for row in rows[:20]:
        assert (out.parent / row["file"]).resolve() == (DEMO_CAPTIONS.parent / train[row["id"]]["file"]).resolve()
        assert row["split"] == "train" and row["captions"][:8] == train[row["id"]]["captions"]
        assert len(set(row["captions"][8:])) == 5
    again = augment(load_records(path=DEMO_CAPTIONS), 5, 4)
    assert [r["captions"] for r in again] == [r["captions"] for r in rows]


def test_must_attributes_are_named_in_every_paraphrase():
    rng = np.random.default_rng(1)
    for _ in range(200):
        text = paraphrase(CLIP, rng, typo_rate=0.0, must=("loudness", "register"))
        assert any(p in text for p in PARAPHRASES["loudness"]["quiet"]), text
        assert any(p in text for p in PARAPHRASES["register"]["high"]), text
        assert text.count(",") + text.count(" and ") <= 4  # still at most four attributes


def test_augment_keeps_the_fields_variant_batches_group_by(tmp_path):
    """A variant set's records keep their render seed, so `muqsearch train --group-by seed` still batches
    each set's clips together after augmentation, and its paraphrases name what tells its clips apart."""
    from data.demo.augment import varied_attributes
    from data.demo.generate import plan_variants

    records = [dict(c.record(), path=str(tmp_path / c.file)) for c in plan_variants(5, 3, ("loudness", "register"))]
    assert set(varied_attributes(records).values()) == {("loudness", "register")}
    assert varied_attributes(load_records("train", DEMO_CAPTIONS)) == {}  # the library: one clip per seed
    rows = augment(records, 4, 0)
    assert [r["seed"] for r in rows] == [r["seed"] for r in records]
    assert [r["attributes"] for r in rows] == [r["attributes"] for r in records]
    assert all(r["captions"][: len(o["captions"])] == o["captions"] and len(r["captions"]) == len(o["captions"]) + 4
               for r, o in zip(rows, records, strict=True))


def test_a_paraphrase_typo_lands_in_a_named_phrase_not_in_the_frame():
    from data.demo.captions import PARAPHRASE_FRAMES

    def words(text):
        return {w.strip(",.?!:;'\"()").lower() for w in text.split()}

    known = set().union(*(words(p) for name, value in CLIP.items() for p in PARAPHRASES[name][value]))
    frames = set().union(*(words(f.replace("{}", " ")) for f in PARAPHRASE_FRAMES)) | {"and"}  # and the joiner
    def one_slip_from(word, candidates):  # a letter dropped, doubled, swapped or replaced
        def near(a, b):
            if len(a) == len(b):
                diff = [i for i in range(len(a)) if a[i] != b[i]]
                return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                          and a[diff[1]] == b[diff[0]])
            short, long = sorted((a, b), key=len)
            return len(long) == len(short) + 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))
        return {c for c in candidates if near(word, c)}

    rng = np.random.default_rng(2)
    slipped = 0
    for _ in range(200):
        text = paraphrase(CLIP, rng, typo_rate=1.0)
        unknown = words(text) - known - frames
        assert len(unknown) <= 1, text
        for word in unknown:  # a slip of a phrase word (a frame word's slip is seldom one slip from one)
            assert one_slip_from(word, known), text
        slipped += len(unknown)
    assert slipped > 150  # most draws name a word of four letters or more
