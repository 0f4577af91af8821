"""The standalone MuQ encoder (`OpenMuQ/MuQ-large-msd-iter`): features for researchers, and the network
that MuQ's self-supervised pretraining trains.

Reading order: SSLConfig (the pretraining side of the official config) -> MuQNetwork (the audio tower of
muq_model.muq plus the prediction head and the target quantiser, under the official module names) -> MuQ
(the user-facing wrapper: features, target codes, the masked-prediction loss, checkpoints).

The official config.json is read and written as it is (`label_rate`, `w2v2_config`, `stat`, ...):
`read_official_config` splits it into the encoder's MuQConfig and SSLConfig, `official_config` joins them
back. Checkpoint keys are the official ones (`model.conv...`, `model.rvq.quantizers.0.in_proj.weight_g`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from muq_model.config import MuQConfig
from muq_model.muq import MuQModel
from muq_model.rvq import RandomProjectionQuantizer, ResidualVectorQuantizer, RVQConfig, fold_frames

RVQ_CODEBOOK_SIZE = 1024  # every Mel-RVQ stage, and so every slice of the prediction head, has 1024 codes


@dataclass
class SSLConfig:
    """The pretraining fields of the official MuQConfig (spec sections 5 and 6)."""

    rvq_n_codebooks: int = 8  # Mel-RVQ stages; the head predicts the first codebook_size / 1024 of them
    codebook_dim: int = 16  # width of the quantisers' code space
    mask_hop: float = 0.4  # seconds per masking block
    mask_prob: float = 0.6  # probability that a block is masked
    recon_loss_ratio: float | None = None  # weight of the optional mel-reconstruction loss (adds recon_proj)


class MuQNetwork(MuQModel):
    """The encoder plus what pretraining needs, under the official names: `linear` (the K x 1024-way
    prediction head), `cls_token` (never used, kept for the checkpoint), and the target quantiser, `rvq`
    (Mel-RVQ) or `quantizer_melspec_2048` (random projection), and `recon_proj` when reconstructing."""

    def __init__(self, config: MuQConfig, ssl: SSLConfig):
        super().__init__(config)
        self.ssl = ssl
        folded_dim = config.n_mels * self.n_fold
        self.linear = nn.Linear(config.encoder_dim, config.codebook_size)
        self.cls_token = nn.Parameter(torch.randn(config.encoder_dim))
        if config.use_rvq_target:
            self.rvq = ResidualVectorQuantizer(RVQConfig(
                input_dim=folded_dim, n_codebooks=ssl.rvq_n_codebooks, codebook_size=RVQ_CODEBOOK_SIZE,
                codebook_dim=ssl.codebook_dim,
            ))
        else:
            self.quantizer_melspec_2048 = RandomProjectionQuantizer(folded_dim, ssl.codebook_dim, config.codebook_size)
        if ssl.recon_loss_ratio:
            self.recon_proj = nn.Linear(config.encoder_dim, folded_dim)

    @property
    def n_fold(self) -> int:
        """Mel frames per token (4 at 25 Hz)."""
        return 100 // self.config.label_rate

    @property
    def n_targets(self) -> int:
        """Codebooks the head predicts: codebook_size / 1024 Mel-RVQ levels, or 1 random-projection code."""
        return self.config.codebook_size // RVQ_CODEBOOK_SIZE if self.config.use_rvq_target else 1

    def folded_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Clean waveform (B, N) -> normalised mel folded to tokens (B, T', n_fold * n_mels), in fp32."""
        with torch.no_grad():
            return fold_frames(self.mel(wave), self.n_fold)


@dataclass
class MuQOutput:
    last_hidden_state: torch.Tensor  # (B, T', D)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # encoder_depth + 1 tensors (B, T', D)
    logits: torch.Tensor | None = None  # (B, T', K, C) when targets were given
    loss: torch.Tensor | None = None  # cross-entropy at masked tokens (+ weighted reconstruction loss)
    accuracy: torch.Tensor | None = None  # argmax == target at masked tokens, over every codebook
    recon_loss: torch.Tensor | None = None


class MuQ(nn.Module):
    """MuQ SSL encoder. `model(wavs)` gives features like the official package; `model.tokenize(wavs)`
    the Mel-RVQ target codes; `model(masked, targets=codes, mask=token_mask)` the pretraining loss."""

    def __init__(self, config: MuQConfig, ssl: SSLConfig | None = None):
        super().__init__()
        self.config, self.ssl = config, ssl or SSLConfig()
        self.model = MuQNetwork(config, self.ssl)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def samples_per_token(self) -> int:
        """Waveform samples per 25 Hz token (960); training crops are multiples of it."""
        return self.config.hop_length * self.model.n_fold

    def forward(self, wavs: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states: bool = True,
                *, targets: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                recon_target: torch.Tensor | None = None) -> MuQOutput:
        """wavs (B, N) at 24 kHz. With `targets` (B, K, T') codes and `mask` (B, T') booleans (True = masked
        token), also the masked-prediction loss; `recon_target` (B, T', 512), the clean folded mel, adds
        the reconstruction loss when the config weights it."""
        hidden = self.model(wavs, attention_mask)
        out = MuQOutput(last_hidden_state=hidden[-1], hidden_states=tuple(hidden) if output_hidden_states else None)
        if targets is None:
            return out
        b, t, _ = hidden[-1].shape
        if targets.shape != (b, self.model.n_targets, t) or mask is None or mask.shape != (b, t):
            raise ValueError(f"targets must be (B, K, T') = {(b, self.model.n_targets, t)} codes with a (B, T') mask; "
                             f"got {tuple(targets.shape)} and {None if mask is None else tuple(mask.shape)}")
        out.logits = self.model.linear(hidden[-1]).view(b, t, self.model.n_targets, -1)
        masked_logits = out.logits[mask]  # (M, K, C)
        masked_targets = targets.transpose(1, 2)[mask]  # (M, K)
        count = max(masked_targets.numel(), 1)  # a batch without masked tokens gives a zero loss, not NaN
        out.loss = F.cross_entropy(masked_logits.flatten(0, 1).float(), masked_targets.flatten(), reduction="sum") / count
        out.accuracy = (masked_logits.argmax(-1) == masked_targets).sum() / count
        if self.ssl.recon_loss_ratio and recon_target is not None:
            predicted = self.model.recon_proj(hidden[-1][mask]).float()
            out.recon_loss = F.mse_loss(predicted, recon_target[mask].float())
            out.loss = out.loss + self.ssl.recon_loss_ratio * out.recon_loss
        return out

    @torch.no_grad()
    def tokenize(self, wavs: torch.Tensor) -> torch.Tensor:
        """Clean waveforms (B, N), N a multiple of samples_per_token -> target codes (B, K, T'): the first K
        Mel-RVQ levels of the folded mel (or the random-projection code, K = 1)."""
        folded = self.model.folded_mel(wavs)
        if self.config.use_rvq_target:
            return self.model.rvq.encode(folded)[:, : self.model.n_targets]
        return self.model.quantizer_melspec_2048(folded)[:, None]

    # ---- checkpoints ------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, device=None) -> MuQ:
        """Load an official-layout directory or hub id strictly: unknown, missing or mis-shaped keys raise
        CheckpointError naming them (only the dead modules of checkpoint.MUQ_IGNORED_KEYS are skipped)."""
        from muq_model.checkpoint import load_muq

        return load_muq(cls, name_or_path, device=device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """config.json (official layout) + model.safetensors (official key names)."""
        from muq_model.checkpoint import save_muq

        return save_muq(self, directory)

    def config_json(self) -> str:
        return json.dumps(official_config(self.config, self.ssl), indent=2) + "\n"


# ---- the official config.json --------------------------------------------------------------------------

MEL_FEATURE = "melspec_2048"
# w2v2_config entries the official Conformer reads besides the ones MuQConfig carries; written with the
# values of facebook/wav2vec2-conformer-rope-large (spec 1.2) so the official package can build the model.
W2V2_FIXED = {
    "hidden_act": "swish", "position_embeddings_type": "rotary", "feat_extract_activation": "gelu",
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "max_source_positions": 5000,
    "layerdrop": 0.0, "feat_proj_dropout": 0.0, "final_dropout": 0.1,
}


def official_config(config: MuQConfig, ssl: SSLConfig) -> dict:
    """MuQConfig + SSLConfig -> the official config.json dict."""
    return {
        "label_rate": config.label_rate, "num_codebooks": 1, "codebook_dim": ssl.codebook_dim,
        "codebook_size": config.codebook_size, "features": [MEL_FEATURE], "hop_length": config.hop_length,
        "n_mels": config.n_mels, "conv_dim": config.conv_dim, "encoder_dim": config.encoder_dim,
        "encoder_depth": config.encoder_depth, "mask_hop": ssl.mask_hop, "mask_prob": ssl.mask_prob,
        "is_flash": False,
        "stat": {f"{MEL_FEATURE}_mean": config.mel_mean, f"{MEL_FEATURE}_std": config.mel_std},
        "w2v2_config": {
            **W2V2_FIXED,
            "hidden_size": config.encoder_dim, "num_hidden_layers": config.encoder_depth,
            "num_attention_heads": config.num_heads, "intermediate_size": config.ffn_dim,
            "conv_depthwise_kernel_size": config.conv_kernel_size, "rotary_embedding_base": config.rotary_base,
            "layer_norm_eps": config.layer_norm_eps, "hidden_dropout": config.dropout,
            "activation_dropout": config.dropout, "attention_dropout": config.dropout,
            "conformer_conv_dropout": config.dropout,
        },
        "use_rvq_target": config.use_rvq_target, "use_vq_target": False, "use_encodec_target": False,
        "rvq_ckpt_path": None, "recon_loss_ratio": ssl.recon_loss_ratio, "resume_checkpoint": None,
        "rvq_n_codebooks": ssl.rvq_n_codebooks, "rvq_multi_layer_num": 1,
    }


def read_official_config(data: dict, where: str = "config.json") -> tuple[MuQConfig, SSLConfig]:
    """The official config.json dict -> (MuQConfig, SSLConfig); options this implementation does not
    build (other features or target kinds, MLP quantiser projections, non-rotary positions) raise
    ValueError naming the field."""
    def unsupported(field: str, value, wanted) -> None:
        if value != wanted:
            raise ValueError(f"{where}: {field}={value!r} is not supported (only {wanted!r})")

    if "mulan" in data:
        raise ValueError(f"{where} describes a MuQ-MuLan model: load it with MuQMuLan.from_pretrained")
    unsupported("features", data.get("features", [MEL_FEATURE]), [MEL_FEATURE])
    unsupported("num_codebooks", data.get("num_codebooks", 1), 1)
    unsupported("use_vq_target", data.get("use_vq_target", False), False)
    unsupported("use_encodec_target", data.get("use_encodec_target", False), False)
    unsupported("rvq_multi_layer_num", data.get("rvq_multi_layer_num", 1), 1)
    w2v2 = data.get("w2v2_config") or {}
    unsupported("w2v2_config.position_embeddings_type", w2v2.get("position_embeddings_type", "rotary"), "rotary")
    if w2v2.get("hidden_act", "swish") not in ("swish", "silu"):
        raise ValueError(f"{where}: w2v2_config.hidden_act={w2v2['hidden_act']!r} is not supported (only swish)")
    stat = data.get("stat") or {}
    if f"{MEL_FEATURE}_mean" not in stat or f"{MEL_FEATURE}_std" not in stat:
        raise ValueError(f"{where}: stat must give {MEL_FEATURE}_mean and {MEL_FEATURE}_std (the mel normalisation)")
    defaults = MuQConfig()
    try:
        config = MuQConfig(
            hop_length=int(data.get("hop_length", defaults.hop_length)), n_mels=int(data.get("n_mels", defaults.n_mels)),
            mel_mean=float(stat[f"{MEL_FEATURE}_mean"]), mel_std=float(stat[f"{MEL_FEATURE}_std"]),
            label_rate=int(data.get("label_rate", defaults.label_rate)),
            conv_dim=int(data.get("conv_dim", defaults.conv_dim)),
            encoder_dim=int(data.get("encoder_dim", defaults.encoder_dim)),
            encoder_depth=int(data.get("encoder_depth", defaults.encoder_depth)),
            num_heads=int(w2v2.get("num_attention_heads", defaults.num_heads)),
            ffn_dim=int(w2v2.get("intermediate_size", defaults.ffn_dim)),
            conv_kernel_size=int(w2v2.get("conv_depthwise_kernel_size", defaults.conv_kernel_size)),
            rotary_base=float(w2v2.get("rotary_embedding_base", defaults.rotary_base)),
            layer_norm_eps=float(w2v2.get("layer_norm_eps", defaults.layer_norm_eps)),
            dropout=float(w2v2.get("hidden_dropout", defaults.dropout)),
            codebook_size=int(data.get("codebook_size", 4096)),  # the official code default
            use_rvq_target=bool(data.get("use_rvq_target", False)),
        )
        ssl = SSLConfig(
            rvq_n_codebooks=int(data.get("rvq_n_codebooks", 8)), codebook_dim=int(data.get("codebook_dim", 16)),
            mask_hop=float(data.get("mask_hop", 0.4)), mask_prob=float(data.get("mask_prob", 0.6)),
            recon_loss_ratio=None if data.get("recon_loss_ratio") is None else float(data["recon_loss_ratio"]),
        )
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    if config.use_rvq_target and (config.codebook_size % RVQ_CODEBOOK_SIZE
                                  or config.codebook_size // RVQ_CODEBOOK_SIZE > ssl.rvq_n_codebooks):
        raise ValueError(f"{where}: codebook_size={config.codebook_size} must be a multiple of {RVQ_CODEBOOK_SIZE} "
                         f"and at most rvq_n_codebooks={ssl.rvq_n_codebooks} x {RVQ_CODEBOOK_SIZE}")
    return config, ssl
