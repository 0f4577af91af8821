"""MuLan towers: the lucidrains-style transformer (cosine attention, GEGLU) and the audio/text towers
(spec section 4). Parameter names follow the official checkpoint, including the Sequential indices
(`layers.{i}.0` = attention, `layers.{i}.1.{0,1,4}` = feed-forward; spec Q-W5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from muq_model.config import ModalModelConfig, MuLanTransformerConfig, MuQConfig
from muq_model.muq import MuQModel
from muq_model.text_encoder import build_text_encoder


class LayerNormNoBias(nn.Module):
    """LayerNorm with a learned scale and no bias (upstream keeps a zero non-persistent buffer)."""

    def __init__(self, dim: int):
        super().__init__()
        self.learned_gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.learned_gamma)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)  # first half * GELU(second half) (spec Q-N5)


class Attention(nn.Module):
    """Cosine attention: L2-normalised q and k times learned per-dim scales, fixed scale 8 (Q-N6)."""

    scale = 8.0

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = LayerNormNoBias(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.attn_dropout = nn.Dropout(dropout)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)  # k first, then v
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, N, dh)
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        sim = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, H, N, N)
        if key_mask is not None:  # (B, N) True = real token
            sim = sim.masked_fill(~key_mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        attn = self.attn_dropout(sim.softmax(dim=-1))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)  # (B, N, H * dh)
        return self.to_out(out)


def feed_forward(dim: int, mult: int, dropout: float) -> nn.Sequential:
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(
        LayerNormNoBias(dim), nn.Linear(dim, 2 * inner, bias=False), GEGLU(), nn.Dropout(dropout),
        nn.Linear(inner, dim, bias=False),
    )


class MuLanTransformer(nn.Module):
    """Pre-norm residual blocks, no positional encoding and no final norm (spec 4.3)."""

    def __init__(self, config: MuLanTransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                Attention(config.dim, config.heads, config.dim_head, config.attn_dropout),
                feed_forward(config.dim, config.ff_mult, config.ff_dropout),
            ])
            for _ in range(config.tf_depth)
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x, key_mask)
            x = x + ff(x)
        return x


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1; over the True positions only when a (B, N) mask is given."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MelSummary(nn.Module):
    """Clip-level statistics of the normalised mel -> (B, dim), added to the audio tower's pooled output.

    Per band of adjacent mels: the mean (level and pitch range), the spread over time and the mean
    frame-to-frame change (how busy the band is). A small model's time-averaged Conformer state carries
    these weakly: linear probes read the demo world's loudness from these statistics at 0.99 and from the
    demo model's vectors without them at 0.57 (data/demo/model/MODEL_CARD.md). The last layer starts at
    zero, so a tower that gains a summary (`MuQMuLan.add_mel_summary`) still makes the vectors it made."""

    def __init__(self, bands: int, dim: int):
        super().__init__()
        self.bands = bands
        self.net = nn.Sequential(nn.Linear(3 * bands, dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) time-first normalised mel (or a time crop of it) -> (B, dim)."""
        b, t, n_mels = mel.shape
        bands = mel.float().reshape(b, t, self.bands, n_mels // self.bands).mean(dim=-1)  # (B, T, bands)
        change = (bands[:, 1:] - bands[:, :-1]).abs().mean(dim=1) if t > 1 else torch.zeros_like(bands[:, 0])
        stats = torch.cat([bands.mean(dim=1), bands.std(dim=1, unbiased=False), change], dim=-1)  # (B, 3 * bands)
        return self.net(stats.to(mel.dtype))


class RhythmSummary(nn.Module):
    """How the clip repeats in time -> (B, dim), added to the audio tower's pooled output.

    Per group of adjacent mels, two autocorrelations at lags of 40 ms to 1.56 s: of the onsets (the mel's
    rise from frame to frame; also over all mels), which give a beat's period and a note rate, and of the
    spectral shape (the cosine between a frame's centred spectrum and a later one's), which tells a held
    drone, a chord re-struck each beat, an arpeggio's cycle and a wandering melody apart. A clip-level
    MelSummary has no time order, and a small model's mean-pooled Conformer state carries little of it:
    linear probes read the demo world's tempo at 0.95 and its texture at 0.78 from these and MelSummary's
    statistics together, and at 0.58 and 0.55 from those statistics alone (data/demo/model/MODEL_CARD.md).
    Means are taken over each lag's overlap, so a 4 s training crop and a 10 s clip give the same values
    for the same music. Zero-initialised like MelSummary."""

    LAGS = tuple(range(4, 160, 4))  # mel frames (10 ms each)

    def __init__(self, groups: int, dim: int):
        super().__init__()
        self.groups = groups
        self.net = nn.Sequential(nn.Linear((2 * groups + 1) * len(self.LAGS), dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) time-first normalised mel (or a time crop of it) -> (B, dim)."""
        b, t, _ = mel.shape
        dtype, mel = mel.dtype, mel.float()
        onsets = (mel[:, 1:] - mel[:, :-1]).clamp(min=0)  # (B, T-1, n_mels)
        grouped = onsets.reshape(b, t - 1, self.groups, -1).mean(dim=-1)
        envelopes = torch.cat([grouped, onsets.mean(dim=-1, keepdim=True)], dim=-1)  # (B, T-1, groups + 1)
        envelopes = envelopes - envelopes.mean(dim=1, keepdim=True)
        variance = envelopes.pow(2).mean(dim=1) + 1e-6
        shapes = mel.reshape(b, t, self.groups, -1)
        shapes = F.normalize(shapes - shapes.mean(dim=-1, keepdim=True), dim=-1)  # (B, T, groups, mels per group)
        correlations = []
        for lag in self.LAGS:
            if lag < t - 1:
                onset = (envelopes[:, lag:] * envelopes[:, :-lag]).mean(dim=1) / variance
                shape = (shapes[:, lag:] * shapes[:, :-lag]).sum(dim=-1).mean(dim=1)
                correlations.append(torch.cat([onset, shape], dim=-1))
            else:  # a crop shorter than the lag
                correlations.append(mel.new_zeros(b, 2 * self.groups + 1))
        return self.net(torch.stack(correlations, dim=-1).flatten(1).to(dtype))


class AudioTower(nn.Module):
    """MuQ -> hidden state `use_layer_idx` -> proj -> MuLan transformer -> mean over time (+ MelSummary and
    RhythmSummary of the clip's mel when the config asks for them).

    Training caches the tower's frozen front once per track (`features`: the mel, which has no
    parameters, or with a frozen stem the stem's output) and runs the rest per step on crops of it
    (`forward_from_features`)."""

    def __init__(self, model_config: ModalModelConfig, muq: MuQConfig, transformer: MuLanTransformerConfig):
        super().__init__()
        self.use_layer_idx = model_config.use_layer_idx
        self.model = MuQModel(muq)
        self.proj = nn.Linear(muq.encoder_dim, transformer.dim)
        self.transformer = MuLanTransformer(transformer)
        bands = model_config.mel_summary_bands
        self.summary = MelSummary(bands, transformer.dim) if bands else None
        groups = model_config.rhythm_summary_groups
        self.rhythm = RhythmSummary(groups, transformer.dim) if groups else None

    @property
    def reads_mel(self) -> bool:
        """Whether a summary beside the Conformer reads the clip's mel."""
        return self.summary is not None or self.rhythm is not None

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if not self.reads_mel:
            return self.pool(self.model(clips)[self.use_layer_idx])
        # The mel once, for the Conformer and the summaries (it is ~40 % of the demo model's time per clip)
        return self.forward_from_features(self.model.features(clips).transpose(1, 2))

    def features(self, clips: torch.Tensor, *, through_stem: bool = False) -> torch.Tensor:
        """(B, S) clips -> time-first features, without gradients: the normalised mel (B, T, n_mels), or
        with `through_stem` the Conv2d stem's output before its linear layer (B, T', C * F/4), computed in
        the tower's current mode (eval: BatchNorm running statistics, as at inference)."""
        self.check_features(through_stem)
        with torch.no_grad():
            mel = self.model.features(clips)  # (B, n_mels, T)
            return self.model.conv.flat_features(mel) if through_stem else mel.transpose(1, 2)

    def forward_from_features(self, features: torch.Tensor, *, through_stem: bool = False) -> torch.Tensor:
        """Time-first `features` (or time crops of them) -> (B, dim), with gradients: the rest of `forward`,
        equal to it on the clips the features came from (tests/test_training.py)."""
        self.check_features(through_stem)
        muq = self.model
        features = features.to(muq.compute_dtype)
        frames = muq.conv.linear(features) if through_stem else muq.conv(features.transpose(1, 2))  # (B, T', D)
        pooled = self.pool(muq.conformer(frames)[self.use_layer_idx])
        for summary in (self.summary, self.rhythm):
            if summary is not None:
                pooled = pooled + summary(features)
        return pooled

    def check_features(self, through_stem: bool) -> None:
        """A mel or rhythm summary needs the mel, which the stem's cached output no longer is."""
        if through_stem and self.reads_mel:
            raise ValueError("this audio tower has a mel or rhythm summary, which needs the mel: train it with the "
                             "stem unfrozen (no --freeze-stem)")

    def features_per_second(self, *, through_stem: bool = False) -> float:
        """Time steps per second of audio in `features`."""
        muq = self.model.config
        return muq.sample_rate / muq.hop_length / (math.prod(muq.time_strides) if through_stem else 1)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T', D_muq) MuQ hidden state -> (B, dim): the MuLan part."""
        return self.transformer(self.proj(hidden)).mean(dim=1)


class TextTower(nn.Module):
    """Pretrained text encoder -> proj (Identity when model_dim is null) -> MuLan transformer -> mean.

    `pad_aware=False` reproduces the official pooling: the MuLan transformer attends over padding and
    the mean includes pad positions (Q-N7), so a text's vector depends on its batch. `pad_aware=True`
    masks padding in both places; for an unpadded sequence the two are the same computation.
    """

    def __init__(self, model_config: ModalModelConfig, hf_config: dict, transformer: MuLanTransformerConfig):
        super().__init__()
        self.model = build_text_encoder(hf_config)
        width = hf_config["hidden_size"]
        self.proj = nn.Identity() if model_config.model_dim is None else nn.Linear(width, transformer.dim)
        self.transformer = MuLanTransformer(transformer)
        self.frozen_encoder = True  # official: the encoder always runs under no_grad (Q-T9)

    @property
    def max_positions(self) -> int:
        config = self.model.config
        offset = config.pad_token_id + 1 if config.model_type in ("xlm-roberta", "roberta") else 0
        return config.max_position_embeddings - offset

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, pad_aware: bool) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            hidden = self.model(input_ids, attention_mask)  # (B, L, W)
        return self.forward_from_features(hidden, attention_mask.bool() if pad_aware else None)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> the pretrained encoder's last hidden state (B, L, W), without gradients:
        what training caches per caption while the encoder is frozen."""
        with torch.no_grad():
            return self.model(input_ids, attention_mask)

    def forward_from_features(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L, W) encoder states -> (B, dim): the MuLan part of `forward`; `key_mask` (B, L), True =
        token, makes it pad-aware."""
        x = self.transformer(self.proj(hidden), key_mask)  # (B, L, dim)
        return masked_mean(x, key_mask)  # (B, dim)
