"""muq_model.spelling: a query word the model never met, one slip from a word of its training captions, is
read as that word; real words, short words and words two slips away are left as typed."""

from __future__ import annotations

import pytest

from muq_model.spelling import (
    Correction,
    Speller,
    count_words,
    drop_slips,
    one_edit,
    read_caption_words,
    tokenizer_words,
    write_caption_words,
)

WORDS = {"guitar": 900, "strings": 800, "waltz": 300, "trumpets": 200, "march": 400, "quiet": 500, "brass": 700,
         "bass": 600, "bassline": 100, "piano": 1000, "sitar": 5}


class Vocabulary:
    """A tokenizer's vocabulary, as the speller reads it (WordPiece pieces and SentencePiece pieces)."""

    def __init__(self, pieces):
        self.pieces = pieces

    def get_vocab(self):
        return {piece: i for i, piece in enumerate(self.pieces)}


@pytest.mark.parametrize("typed, meant", [
    ("gitar", "guitar"),        # a letter left out
    ("strinngs", "strings"),    # a letter doubled
    ("walts", "waltz"),         # a letter replaced
    ("trumptes", "trumpets"),   # two neighbours swapped
    ("marhc", "march"),
    ("basline", "bassline"),
])
def test_a_word_one_slip_from_a_caption_word_is_read_as_it(typed, meant):
    text, corrections = Speller(WORDS).correct(f"fast {typed}, please")
    assert text == f"fast {meant}, please"
    assert corrections == [Correction(typed, meant)]


def test_the_most_frequent_candidate_wins_then_the_alphabetically_first():
    assert Speller({"guitar": 900, "sitar": 5}).word("gitar") == "guitar"
    assert Speller({"guitar": 5, "sitar": 900}).word("gitar") == "sitar"
    assert Speller({"bass": 10, "mass": 10}).word("xass") == "bass"


def test_case_is_kept_and_the_rest_of_the_text_is_untouched():
    assert Speller(WORDS).correct("Gitar   and TRUMPTES!") == (
        "Guitar   and TRUMPETS!", [Correction("Gitar", "Guitar"), Correction("TRUMPTES", "TRUMPETS")])


@pytest.mark.parametrize("text", [
    "slow sad piano",            # caption words
    "bas",                       # fewer than four letters
    "quite loud",                # "quite" is a real word the tokenizer knows, one slip from "quiet" or not
    "gtrr",                      # two slips from "guitar"
    "a podcast about politics",  # nothing near
    "piano 1999",
])
def test_words_that_are_known_short_or_far_are_left_as_typed(text):
    speller = Speller(WORDS, tokenizer_words(Vocabulary(["quite", "loud", "[CLS]", "##ing"])))
    assert speller.correct(text) == (text, [])


def test_tokenizer_words_are_whole_words_of_either_vocabulary_kind():
    words = tokenizer_words(Vocabulary(["quite", "##tar", "▁Violin", "▁", "[SEP]", "x1"]))
    assert words == {"quite", "violin"}
    assert tokenizer_words(None) == set()


def test_slips_of_the_caption_augmentation_are_not_words():
    counts = {"bass": 1000, "bss": 60, "basss": 20, "bassline": 300, "flute": 40, "flue": 3}
    kept = drop_slips(counts)
    assert kept == {"bass": 1000, "bassline": 300, "flute": 40}
    assert Speller(kept).word("basss") == "bass"  # the slip is corrected, not taken for a word


def test_one_edit_reaches_every_single_slip_and_not_the_word_itself():
    edits = one_edit("bass")
    assert {"bas", "basss", "bsas", "mass", "bast"} <= edits and "bass" not in edits
    assert "bssa" not in edits  # two slips


def test_count_words_lowercases_letter_runs():
    assert count_words(["Slow, slow piano", "piano-ish 4/4"]) == {"slow": 2, "piano": 2, "ish": 1}


def test_the_word_list_round_trips_and_a_bad_file_is_named(tmp_path):
    assert read_caption_words(tmp_path) == {}
    write_caption_words(tmp_path, {"piano": 3, "bass": 2})
    assert read_caption_words(tmp_path) == {"piano": 3, "bass": 2}
    (tmp_path / "caption_words.json").write_text('["piano"]')
    with pytest.raises(ValueError, match="caption_words.json: not a caption word list"):
        read_caption_words(tmp_path)


def test_a_model_without_caption_words_has_no_speller():
    class Model:
        caption_words: dict = {}
        tokenizer = None

    assert Speller.for_model(Model()) is None
    Model.caption_words = {"piano": 1}
    assert Speller.for_model(Model()).word("pianp") == "piano"
