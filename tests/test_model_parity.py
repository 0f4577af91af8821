"""Our MuQ-MuLan against golden outputs of the official muq==0.1.0 package (small random config).

The golden files come from tests/fixtures/make_official_golden.py, run in a separate virtual
environment with the official package; this test only needs the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from muq_model import MuQMuLan
from muq_model.checkpoint import IGNORED_KEYS

FIXTURE = Path(__file__).parent / "fixtures" / "official_tiny"
TOLERANCE = 1e-4
SECONDS = (3, 10, 25)


@pytest.fixture(scope="module")
def golden():
    return load_file(str(FIXTURE / "golden.safetensors"))


@pytest.fixture(scope="module")
def model():
    return MuQMuLan.from_pretrained(FIXTURE)


def wave(golden, seconds):
    return golden[f"audio_{seconds}s_int16"].float() / 32768.0


def test_official_state_dict_loads_strictly_with_only_the_listed_keys_ignored(model):
    official = load_file(str(FIXTURE / "model.safetensors"))
    ignored = sorted(k for k in official if any(p.fullmatch(k) for p in IGNORED_KEYS))
    # The dead modules the spec lists (Q-W1) and the recomputed rotary frequencies, nothing else.
    owners = {".".join(k.split(".")[:-1]) for k in ignored}
    muq = "mulan.audio.model.model"
    assert owners == {
        muq, f"{muq}.linear", f"{muq}.quantizer_melspec_2048", f"{muq}.conformer.embed_positions",
        f"{muq}.conformer.pos_conv_embed.conv", f"{muq}.conformer.pos_conv_embed.conv.parametrizations.weight",
        "mulan.audio.aggregator", "mulan.text.model.pooler.dense", "mulan.contrast",
    }
    assert len(model.state_dict()) == len(official) - len(ignored)


def test_mel_matches_official(model, golden):
    ours = model.audio.model.mel(wave(golden, 3)[None], normalize=False)[0]
    assert ours.shape == golden["mel_db_3s"].shape
    assert (ours - golden["mel_db_3s"]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("seconds", SECONDS)
def test_all_13_hidden_states_match_official(model, golden, seconds):
    with torch.no_grad():
        ours = torch.stack([h[0] for h in model.audio.model(wave(golden, seconds)[None])])
    expected = golden[f"hidden_states_{seconds}s"]
    assert ours.shape == expected.shape and ours.shape[0] == 13
    assert ours.shape[1] == model.config.muq.n_frames(seconds * 24000)
    assert (ours - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("seconds", SECONDS)
def test_track_and_clip_embeddings_match_official(model, golden, seconds):
    track, (clips,) = model.embed_audio([wave(golden, seconds)], return_clips=True)
    assert (clips.embeddings - golden[f"clip_embeddings_{seconds}s"]).abs().max() <= TOLERANCE
    assert (track[0] - golden[f"track_embedding_{seconds}s"]).abs().max() <= TOLERANCE


def test_text_embeddings_match_official_single_texts(model, golden):
    n = sum(1 for k in golden if k.startswith("text_ids_"))
    ids = [golden[f"text_ids_{i}"] for i in range(n)]
    width = max(len(t) for t in ids)
    batch = torch.ones(n, width, dtype=torch.long)  # <pad> = 1
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, t in enumerate(ids):
        batch[i, : len(t)], mask[i, : len(t)] = t, 1
    ours = model.embed_text_ids(batch, mask)  # batch-invariant = each text alone
    for i in range(n):
        assert (ours[i] - golden[f"text_embedding_{i}"]).abs().max() <= TOLERANCE


def test_official_padded_batch_pooling_is_reproducible(model, golden):
    n = sum(1 for k in golden if k.startswith("text_ids_"))
    ids = [golden[f"text_ids_{i}"] for i in range(n)]
    width = max(len(t) for t in ids)
    batch = torch.ones(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, t in enumerate(ids):
        batch[i, : len(t)], mask[i, : len(t)] = t, 1
    with torch.no_grad():
        official_mode = model.encode_text_ids(batch, mask, pad_aware=False)
    assert (official_mode - golden["text_embedding_padded_batch"]).abs().max() <= TOLERANCE
    # ... and it really differs from the single-text vectors for the padded rows (spec Q-N7).
    shortest = min(range(n), key=lambda i: len(ids[i]))
    assert (golden["text_embedding_padded_batch"][shortest] - golden[f"text_embedding_{shortest}"]).abs().max() > 1e-3


def test_fixture_config_is_the_official_layout_plus_extensions():
    config = json.loads((FIXTURE / "config.json").read_text())
    assert set(config) == {"mulan", "audio_model", "text_model", "audio_transformer", "text_transformer"}
    assert set(config["audio_model"]) == {"name", "model_dim", "use_layer_idx", "muq"}
