"""The full-size MuQ-MuLan-large architecture: element counts of spec section 9, the complete official
key list (fixtures/muq_mulan_large_state_dict.tsv) loading strictly, and the shapes
of a real forward pass. Random weights; no checkpoint needed.

Optional: with MUQSEARCH_OFFICIAL_FULLSIZE=DIR (written by `make_official_golden.py --full-size DIR`
in the oracle environment) the full-size model is also compared with the official package.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from muq_model import MuQMuLan, MuQMuLanConfig
from muq_model.checkpoint import IGNORED_KEYS, map_official_state_dict
from muq_model.muq import Conv2dSubsampling

pytestmark = pytest.mark.slow

KEY_LIST = Path(__file__).parent / "fixtures" / "muq_mulan_large_state_dict.tsv"
MUQ_PREFIX = "mulan.audio.model."


def official_keys() -> dict[str, tuple[tuple[int, ...], str]]:
    keys = {}
    for line in KEY_LIST.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        keys[name] = (tuple(int(d) for d in shape.strip("()").split(",") if d.strip()), dtype)
    return keys


def elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        return MuQMuLan(MuQMuLanConfig.large(), tokenizer=None)


def test_official_key_list_matches_spec_totals():
    keys = official_keys()
    assert len(keys) == 805
    assert sum(elements(s) for s, _ in keys.values()) == 663_403_725
    assert sum(elements(s) for k, (s, _) in keys.items() if k.startswith(MUQ_PREFIX)) == 333_440_434
    assert sum(elements(s) for k, (s, _) in keys.items() if k.startswith("mulan.text.model.")) == 278_043_648


def test_complete_official_key_list_loads_strictly(meta_model):
    state = {k: torch.empty(shape, dtype=getattr(torch, dtype.split(".")[1]), device="meta")
             for k, (shape, dtype) in official_keys().items()}
    mapped = map_official_state_dict(meta_model, state)  # raises on any missing/unexpected/mis-shaped key
    assert set(mapped) == set(meta_model.state_dict())
    with pytest.raises(ValueError, match="missing keys: mulan.text.transformer.layers.7.1.4.weight"):
        map_official_state_dict(meta_model, {k: v for k, v in state.items() if not k.endswith("layers.7.1.4.weight")})


def test_element_counts_equal_spec_section_9(meta_model):
    keys = official_keys()
    ignored = {k: s for k, (s, _) in keys.items() if any(p.fullmatch(k) for p in IGNORED_KEYS)}
    ours = sum(t.numel() for t in meta_model.state_dict().values())
    assert ours + sum(elements(s) for s in ignored.values()) == 663_403_725

    def params(module) -> int:
        return sum(p.numel() for p in module.parameters())

    dead_muq_params = sum(  # SSL head, cls_token, pos_conv_embed (v + g + bias): not built here
        elements(s) for k, s in ignored.items()
        if k.startswith(MUQ_PREFIX) and ".rvq." not in k and "inv_freq" not in k
    )
    assert params(meta_model.audio.model) + dead_muq_params == 333_130_880
    rvq_params = sum(elements(s) for k, s in ignored.items() if ".rvq." in k and "stale_counter" not in k)
    assert params(meta_model.audio.model) + dead_muq_params + rvq_params == 333_401_472
    pooler = elements(keys["mulan.text.model.pooler.dense.weight"][0]) + 768
    assert params(meta_model.text.model) + pooler == 278_043_648
    assert params(meta_model.text.transformer) == 50_344_960
    assert params(meta_model.text.transformer.layers[0]) == 6_293_120


def test_full_size_forward_shapes():
    torch.manual_seed(0)
    muq = MuQMuLan(MuQMuLanConfig.large(), tokenizer=None).eval().audio.model
    wave = 0.1 * torch.randn(1, 240_000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert muq.mel(wave).shape == (1, 128, 1000)
        hidden = muq(wave)  # hidden[0] is the Conv2d stem output
    assert len(hidden) == 13 and all(h.shape == (1, 250, 1024) for h in hidden)
    assert muq.config.n_frames(30 * 24000) == 750


def test_full_size_folded_stem_matches_the_plain_stem_in_float64():
    """The eval fast path (BatchNorm folded, Winograd conv2) at 512 channels, BatchNorm far from identity."""
    torch.manual_seed(0)
    config = MuQMuLanConfig.large().muq
    stem = Conv2dSubsampling(config)
    with torch.no_grad():
        for module in stem.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 2.0)
                module.bias.normal_(0.0, 0.1)
    stem.eval()
    mel = torch.randn(1, config.n_mels, 240, generator=torch.Generator().manual_seed(1))  # several row chunks
    with torch.no_grad():
        fast = stem(mel)
        reference = Conv2dSubsampling(config).double().eval()
        reference.load_state_dict(stem.state_dict())
    expected = reference(mel.double())  # gradients on: the plain modules
    assert fast.shape == (1, 60, 1024)
    assert (fast - expected).abs().max() <= 5e-6 * expected.abs().max()


OFFICIAL_FULLSIZE = os.environ.get("MUQSEARCH_OFFICIAL_FULLSIZE")


@pytest.mark.skipif(not OFFICIAL_FULLSIZE, reason="set MUQSEARCH_OFFICIAL_FULLSIZE to a make_official_golden.py "
                    "--full-size directory")
def test_full_size_parity_with_official():
    from safetensors.torch import load_file

    directory = Path(OFFICIAL_FULLSIZE)
    model = MuQMuLan.from_pretrained(directory)
    golden = load_file(str(directory / "golden.safetensors"))
    for seconds in (10, 25):
        wave = golden[f"audio_{seconds}s_int16"].float() / 32768.0
        with torch.no_grad():
            hidden = torch.stack([h[0] for h in model.audio.model(wave[None])])
        assert (hidden - golden[f"hidden_states_{seconds}s"]).abs().max() <= 1e-4
        assert (model.embed_audio([wave])[0] - golden[f"track_embedding_{seconds}s"]).abs().max() <= 1e-4
    ids = golden["text_ids_0"]
    assert (model.embed_text_ids(ids[None])[0] - golden["text_embedding_0"]).abs().max() <= 1e-4
