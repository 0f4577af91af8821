"""MuQ-MuLan's pretrained text encoder (XLM-RoBERTa for the released model, BERT for the demo model's
MiniLM): one post-LayerNorm Transformer encoder, written here with transformers' parameter names so that
their checkpoints load unchanged.

Why not transformers' own classes: building one imports most of transformers and with it torch._dynamo,
about 2.5 CPU seconds, a quarter of a first `muqsearch serve` (benchmarks/firststart.py). The tokenizers
still come from transformers. tests/test_model_parity.py checks this encoder against transformers'.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

ROBERTA_TYPES = ("xlm-roberta", "roberta")  # positions counted from pad_token_id + 1, as fairseq did
BERT_TYPES = ("bert",)
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass(frozen=True)
class EncoderConfig:
    """The fields of a transformers BertConfig / XLMRobertaConfig that shape the encoder; their defaults
    are transformers' (pad_token_id: 0 for BERT, 1 for RoBERTa)."""

    model_type: str
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = None
    initializer_range: float = 0.02

    @classmethod
    def from_hf(cls, hf_config: dict) -> EncoderConfig:
        """From a transformers config dict; refuses what this encoder does not compute (a decoder, relative
        positions, another activation) instead of computing something else."""
        values = dict(hf_config)
        model_type = values.get("model_type")
        if not model_type:
            raise ValueError("text encoder config (text_model.hf_config) needs a 'model_type', e.g. 'xlm-roberta'")
        if model_type not in ROBERTA_TYPES + BERT_TYPES:
            raise ValueError(f"text encoder model_type {model_type!r} is not supported: use one of "
                             f"{', '.join(ROBERTA_TYPES + BERT_TYPES)}")
        unsupported = {"is_decoder": True, "add_cross_attention": True}
        for key, bad in unsupported.items():
            if values.get(key) == bad:
                raise ValueError(f"text encoder config: {key}={bad} is not supported (an encoder only)")
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"text encoder config: position_embedding_type {values['position_embedding_type']!r} "
                             "is not supported (only 'absolute')")
        if values.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise ValueError(f"text encoder config: hidden_act {values['hidden_act']!r} is not supported: use one "
                             f"of {', '.join(ACTIVATIONS)}")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        if config.pad_token_id is None:
            config = replace(config, pad_token_id=1 if model_type in ROBERTA_TYPES else 0)
        return config


def _embedding(rows: int, width: int, padding_idx: int | None = None) -> nn.Embedding:
    """An nn.Embedding left uninitialised (TextEncoder initialises it): its own random init, on the meta
    device where checkpoints are loaded, runs torch's Python decompositions, which import torch._dynamo
    (seconds of a first start)."""
    return nn.Embedding(rows, width, padding_idx=padding_idx, _weight=torch.empty(rows, width))


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        roberta = config.model_type in ROBERTA_TYPES
        self.word_embeddings = _embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = _embedding(config.max_position_embeddings, config.hidden_size,
                                              config.pad_token_id if roberta else None)
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_offset = config.pad_token_id if roberta else None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.position_offset is None:  # BERT: 0, 1, 2, ...
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        else:  # RoBERTa: tokens count from pad + 1, padding keeps the pad position
            token = (input_ids != self.position_offset).long()
            positions = torch.cumsum(token, dim=1) * token + self.position_offset
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0] + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, n, width)


class DenseResidual(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm (transformers' SelfOutput and Output)."""

    def __init__(self, config: EncoderConfig, width_in: int):
        super().__init__()
        self.dense = nn.Linear(width_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseResidual(config, config.hidden_size)


class Intermediate(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseResidual(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        return self.output(self.intermediate(x), x)


class Stack(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class TextEncoder(nn.Module):
    """(B, L) token ids and attention mask -> (B, L, hidden) last hidden states; state-dict keys as
    transformers' BertModel / XLMRobertaModel without the pooler."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.base_model_prefix = "roberta" if config.model_type in ROBERTA_TYPES else "bert"
        self.embeddings = Embeddings(config)
        self.encoder = Stack(config)
        if not self.embeddings.word_embeddings.weight.is_meta:  # meta: built to take a checkpoint's tensors
            self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' initialisation: normal(0, initializer_range) weights, zero biases and padding rows."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = attention_mask.bool()[:, None, None, :]  # keys only: padded queries still get an output
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def build_text_encoder(hf_config: dict) -> TextEncoder:
    """The encoder a transformers config dict describes (BertModel / XLMRobertaModel, no pooler)."""
    return TextEncoder(EncoderConfig.from_hf(hf_config))

