"""Our text encoder (muq_model.text_encoder) computes what transformers' BertModel / XLMRobertaModel
compute, from the same tensors under the same names, and loading a model stays clear of the imports
that made a first start slow."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers

from muq_model.config import XLM_ROBERTA_BASE
from muq_model.text_encoder import EncoderConfig, build_text_encoder

SMALL = {"vocab_size": 300, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 40}


def transformers_encoder(hf_config: dict):
    values = dict(hf_config)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    return transformers.MODEL_MAPPING[type(config)](config, add_pooling_layer=False)


@pytest.mark.parametrize("hf_config", [
    {**XLM_ROBERTA_BASE, **SMALL},
    {"model_type": "bert", "type_vocab_size": 2, "pad_token_id": 0, **SMALL},
], ids=["xlm-roberta", "bert"])
def test_same_outputs_as_transformers_from_the_same_weights(hf_config):
    torch.manual_seed(0)
    reference = transformers_encoder(hf_config).eval()
    ours = build_text_encoder(hf_config).eval()
    assert sorted(ours.state_dict()) == sorted(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    pad = ours.config.pad_token_id
    ids = torch.randint(3, SMALL["vocab_size"], (3, 12))
    mask = torch.ones_like(ids)
    for row, length in ((1, 8), (2, 3)):  # padded rows: padding positions count for the official pooling
        ids[row, length:], mask[row, length:] = pad, 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_unsupported_configs_are_refused_by_name():
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        EncoderConfig.from_hf({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
        EncoderConfig.from_hf({"model_type": "bert", "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="is_decoder"):
        EncoderConfig.from_hf({"model_type": "bert", "is_decoder": True})
    assert EncoderConfig.from_hf({"model_type": "xlm-roberta"}).pad_token_id == 1  # transformers' defaults
    assert EncoderConfig.from_hf({"model_type": "bert"}).pad_token_id == 0


def test_loading_the_demo_model_avoids_the_slow_imports():
    """A first `serve` loads the model: transformers' modelling code, torch._dynamo and sympy cost seconds
    of it, and none is needed (a fresh process, since this one has imported them already)."""
    code = (
        "import sys\n"
        "from muq_model import MuQMuLan\n"
        "from data.demo import DEMO_MODEL_DIR\n"
        "MuQMuLan.from_pretrained(DEMO_MODEL_DIR).embed_text(['slow sad piano'])\n"
        "slow = ('transformers.modeling_utils', 'torch._dynamo', 'sympy')\n"
        "print(' '.join(name for name in slow if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
