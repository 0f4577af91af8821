"""MuQMuLan: the music-text embedding model and the embedding API every other package uses.

Inference API (no gradients, float32 CPU results, deterministic and batch-invariant):
`embed_audio`, `embed_clips`, `embed_text`, `embed_text_ids`, `similarity`, `fingerprint`.
Training hooks (differentiable, unit-norm latents): `encode_audio`, `encode_text_ids`, `freeze`, and on
features the towers cache (`audio.features`, `text.features`): `encode_audio_features`, `encode_text_features`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from muq_model.clips import ClipEmbeddings, ClipPolicy, split_clips, track_embedding
from muq_model.config import MuQMuLanConfig
from muq_model.identity import NUMERICS_VERSIONS, vector_space
from muq_model.mulan import AudioTower, MelSummary, RhythmSummary, TextTower
from muq_model.runtime import check_precision, precision_context, quantise_int8

DEFAULT_CLIP_BATCH_SAMPLES = 8 * 240_000  # clips per forward pass, as a sample budget (~memory bound)


class TokenizerMissingError(RuntimeError):
    """embed_text was called on a model loaded without a tokenizer."""


class MuQMuLan(nn.Module):
    def __init__(self, config: MuQMuLanConfig, *, tokenizer="auto", official_compat: bool = True):
        """tokenizer: a transformers tokenizer, None (no text embedding), or "auto" = whatever is
        available offline for config.text_model.name (see checkpoint.find_tokenizer).
        official_compat: the official clip policy (default); False tiles tracks under 5 s to a full
        clip instead of the official 2L clip (spec Q-M2)."""
        super().__init__()
        config.validate()
        self.config = config
        self.audio = AudioTower(config.audio_model, config.muq, config.audio_transformer)
        self.text = TextTower(config.text_model, config.text_encoder_config, config.text_transformer)
        self.audio_to_latents = nn.Linear(config.audio_transformer.dim, config.mulan.dim_latent)
        self.text_to_latents = nn.Linear(config.text_transformer.dim, config.mulan.dim_latent)
        if tokenizer == "auto":
            from muq_model.checkpoint import find_tokenizer

            tokenizer = find_tokenizer(config)
        self.tokenizer = tokenizer
        self.clip_policy = ClipPolicy(config.clip_samples, official_compat=official_compat)
        self.model_id = "random-init"
        self.caption_words: dict[str, int] = {}  # words of the training captions, for query spelling (muq_model.spelling)
        self.clip_batch_samples = DEFAULT_CLIP_BATCH_SAMPLES
        self._weights_hash: tuple[tuple, str] | None = None  # (weights_version key, hash), see weights_hash
        self.precision = "fp32"  # see set_precision
        self._float_weights_hash: str | None = None  # int8: the hash of the weights it was quantised from

    # ---- facts --------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.mulan.sr

    @property
    def clip_samples(self) -> int:
        return self.config.clip_samples

    @property
    def dim(self) -> int:
        return self.config.mulan.dim_latent

    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer is not None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def set_precision(self, precision: str | None = None) -> MuQMuLan:
        """Inference numerics (muq_model.runtime.PRECISIONS; None: the device's default): fp32, tf32
        (CUDA), bf16 (autocast) or int8 (CPU; quantises the audio tower's Linears and the stem's second block's
        strided convolutions in place, for good).
        Recorded in fingerprint(). Call after moving the model to its device. Returns self."""
        precision = check_precision(precision, self.device)
        if self.precision == "int8" and precision != "int8":
            raise ValueError("this model's audio tower is quantised to int8; load it again for another precision")
        if precision == "int8" and self.precision != "int8":
            self._float_weights_hash = self.weights_hash()
            quantise_int8(self.audio)
        self.precision = precision
        return self

    def add_mel_summary(self, bands: int) -> MuQMuLan:
        """Give the audio tower a clip-level mel summary in `bands` bands (`mulan.MelSummary`, config
        `audio_model.mel_summary_bands`) before fine-tuning; it starts at zero, so the model still makes the
        vectors it made until training moves it. Returns self."""
        return self._grow_audio("summary", "mel_summary_bands", bands, MelSummary, "a mel summary")

    def add_rhythm_summary(self, groups: int) -> MuQMuLan:
        """Give the audio tower the onset and spectral-shape autocorrelations of `groups` groups of mels
        (`mulan.RhythmSummary`, config `audio_model.rhythm_summary_groups`); it starts at zero like
        `add_mel_summary`. Returns self."""
        return self._grow_audio("rhythm", "rhythm_summary_groups", groups, RhythmSummary, "a rhythm summary")

    def _grow_audio(self, attribute: str, field: str, parts: int, module: type[nn.Module], what: str) -> MuQMuLan:
        if getattr(self.audio, attribute) is not None:
            raise ValueError(f"this model's audio tower already has {what}")
        if self.precision == "int8":
            raise ValueError("this model's audio tower is quantised to int8; load it again to change it")
        setattr(self.config.audio_model, field, parts)
        try:
            self.config.validate()
        except ValueError:
            setattr(self.config.audio_model, field, None)
            raise
        setattr(self.audio, attribute, module(parts, self.config.audio_transformer.dim).to(self.device, self.dtype))
        return self

    # ---- differentiable paths (training) ------------------------------------------------------------

    def encode_audio(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, S) clips at 24 kHz -> (B, dim) unit-norm latents, with gradients."""
        return F.normalize(self.audio_to_latents(self.audio(clips.to(self.device))), dim=-1)

    def encode_text_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, pad_aware: bool = True
    ) -> torch.Tensor:
        """(B, L) token ids -> (B, dim) unit-norm latents, with gradients through the MuLan transformer
        (and through the text encoder only if `freeze(text_encoder=False)` was called).

        pad_aware=True masks padding in the MuLan transformer and the mean; False is the official
        pooling, where padding counts (spec Q-N7)."""
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooled = self.text(input_ids, attention_mask.to(self.device), pad_aware=pad_aware)
        return F.normalize(self.text_to_latents(pooled), dim=-1)

    def encode_audio_features(self, features: torch.Tensor, *, through_stem: bool = False) -> torch.Tensor:
        """Cached `audio.features(clips, through_stem=...)`, or time crops of them -> (B, dim) unit-norm
        latents, with gradients: equal to encode_audio on the clips."""
        pooled = self.audio.forward_from_features(features.to(self.device), through_stem=through_stem)
        return F.normalize(self.audio_to_latents(pooled), dim=-1)

    def encode_text_features(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cached `text.features(ids, mask)` (B, L, width) + (B, L) mask -> (B, dim) unit-norm latents, pad-aware:
        equal to encode_text_ids(ids, mask) while the text encoder is frozen."""
        pooled = self.text.forward_from_features(hidden.to(self.device, self.dtype), mask.to(self.device).bool())
        return F.normalize(self.text_to_latents(pooled), dim=-1)

    def freeze(self, *, audio: bool | None = None, stem: bool | None = None, text: bool | None = None,
               text_encoder: bool | None = None):
        """Switch requires_grad per part: `audio` = the whole audio tower + audio_to_latents, `stem` = the
        audio tower's Conv2d blocks (then its output can be cached), `text` = the MuLan text transformer +
        proj + text_to_latents, `text_encoder` = the pretrained text encoder (frozen by default, as
        upstream). None leaves a part as it is. Returns self."""
        if audio is not None:
            for p in [*self.audio.parameters(), *self.audio_to_latents.parameters()]:
                p.requires_grad_(not audio)
        if stem is not None:
            self.audio.model.conv.conv.requires_grad_(not stem)
        if text is not None:
            parts = [self.text.transformer, self.text.proj, self.text_to_latents]
            for p in (p for part in parts for p in part.parameters()):
                p.requires_grad_(not text)
        if text_encoder is not None:
            self.text.frozen_encoder = text_encoder
            for p in self.text.model.parameters():
                p.requires_grad_(not text_encoder)
        return self

    def train(self, mode: bool = True):
        """As nn.Module.train, except that a frozen part (no parameter of it trains) stays in eval mode: its
        BatchNorm statistics and dropout stay as at inference, so a frozen audio tower still makes the
        vectors it made before training (and a library indexed with it stays valid)."""
        super().train(mode)
        if mode:
            parts = [self.audio, self.audio_to_latents, self.audio.model.conv.conv,
                     self.text.transformer, self.text.proj, self.text_to_latents, self.text.model]
            for part in parts:
                if not any(p.requires_grad for p in part.parameters()):
                    part.eval()
        return self

    # ---- audio --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed_clips(self, clips) -> torch.Tensor:
        """(B, S) float32 clips at 24 kHz, equal lengths -> (B, dim) float32 CPU, each row unit norm."""
        clips = torch.as_tensor(clips, dtype=torch.float32)
        if clips.dim() == 1:
            clips = clips[None]
        if clips.dim() != 2:
            raise ValueError(f"embed_clips expects (batch, samples), got shape {tuple(clips.shape)}")
        with precision_context(self.precision, self.device):
            pooled = self.audio(clips.to(self.device)).to(self.dtype)  # (B, audio_transformer.dim)
        # One matrix-vector product per row: a (B, d) GEMM can round differently from the B = 1 GEMV,
        # and a clip's vector must not depend on the batch it was computed in.
        latents = torch.cat([self.audio_to_latents(pooled[i : i + 1]) for i in range(len(pooled))])
        return F.normalize(latents, dim=-1).float().cpu()

    @torch.inference_mode()
    def embed_audio(self, waves: Sequence, sample_rate: int | None = None, *, return_clips: bool = False):
        """Track embeddings (N, dim) for a list of 1-D waveforms of any lengths.

        Each track is cut by the clip policy (see muq_model.clips); clips of all tracks are embedded in
        batches of equal-length clips up to `clip_batch_samples`; a track's vector is the mean of its
        unit-norm clip vectors (not renormalised). With return_clips=True also returns one
        ClipEmbeddings (per-clip vectors, start seconds) per track.
        """
        if isinstance(waves, (torch.Tensor, np.ndarray)) and np.ndim(waves) == 1:
            waves = [waves]
        sample_rate = sample_rate or self.sample_rate
        tracks = []  # (clips, starts) per track
        for i, wave in enumerate(waves):
            wave = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave).float()
            if wave.dim() != 1:
                raise ValueError(f"waveform {i} must be 1-D mono samples, got shape {tuple(wave.shape)}")
            if wave.numel() == 0:
                raise ValueError(f"waveform {i} is empty")
            if sample_rate != self.sample_rate:
                wave = resample(wave, sample_rate, self.sample_rate)
            tracks.append(split_clips(wave, self.clip_policy))

        flat = [(t, c) for t, (clips, _) in enumerate(tracks) for c in range(len(clips))]
        clip_vectors: dict[tuple[int, int], torch.Tensor] = {}
        by_length: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for t, c in flat:
            by_length[tracks[t][0][c].numel()].append((t, c))
        for length, members in by_length.items():
            per_batch = max(1, self.clip_batch_samples // length)
            for i in range(0, len(members), per_batch):
                group = members[i : i + per_batch]
                batch = torch.stack([tracks[t][0][c] for t, c in group])
                for key, vector in zip(group, self.embed_clips(batch), strict=True):
                    clip_vectors[key] = vector

        per_track, out = [], []
        for t, (clips, starts) in enumerate(tracks):
            vectors = torch.stack([clip_vectors[(t, c)] for c in range(len(clips))])  # (n_clips, dim)
            out.append(track_embedding(vectors))
            per_track.append(ClipEmbeddings(vectors, torch.tensor(starts, dtype=torch.float64) / self.sample_rate))
        result = torch.stack(out) if out else torch.empty(0, self.dim)
        return (result, per_track) if return_clips else result

    # ---- text ---------------------------------------------------------------------------------------

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise TokenizerMissingError(
                "this model has no text tokenizer, so it cannot embed text (audio embedding still works). "
                "Pass tokenizer='path/to/xlm-roberta-base' (a directory with the tokenizer files, or a "
                "transformers tokenizer object) to MuQMuLan.from_pretrained, put the tokenizer files in the "
                "model directory (`muqsearch model convert` does this), or download 'xlm-roberta-base' "
                "into the Hugging Face cache while online."
            )
        return self.tokenizer

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (with the special tokens), truncated to the encoder's position table with
        a warning instead of crashing (spec Q-M5 fix)."""
        tokenizer = self._require_tokenizer()
        if isinstance(texts, str):
            raise TypeError("embed_text expects a list of strings, got a single string")
        limit = self.text.max_positions
        ids = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, expected str")
            tokens = tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
            if len(tokens) > limit:
                warnings.warn(f"text {i} has {len(tokens)} tokens; truncated to {limit}", stacklevel=3)
                tokens = tokenizer(text, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
            ids.append(tokens)
        return ids

    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32 CPU, unit norm. Batch-invariant: every text runs on its own, unpadded, so it
        gets bit-identically the vector it gets alone (which is also the official single-text result;
        padded batches would change it, spec Q-N7, and even unpadded batches change GEMM rounding)."""
        return self._embed_token_lists(self.tokenize(texts))

    @torch.inference_mode()
    def embed_text_ids(self, input_ids, attention_mask=None) -> torch.Tensor:
        """(B, L) token ids (+ mask, 1 = token) -> (N, dim), batch-invariant like embed_text: padding is
        stripped and every sequence runs unpadded. For the official padded-batch numbers use
        `encode_text_ids(..., pad_aware=False)`."""
        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
        if mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
        return self._embed_token_lists([row[m.bool()].tolist() for row, m in zip(input_ids, mask, strict=True)])

    def _embed_token_lists(self, token_lists: list[list[int]]) -> torch.Tensor:
        out = torch.empty(len(token_lists), self.dim)
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise ValueError(f"text {i} has no tokens")
            with precision_context(self.precision, self.device):
                out[i] = self.encode_text_ids(torch.tensor([tokens], dtype=torch.long))[0].float().cpu()
        return out

    # ---- comparison, identity -----------------------------------------------------------------------

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Dot product (official `calc_similarity`): (dim,)/(N, dim) x (dim,)/(M, dim)."""
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a @ (b.mT if b.dim() == 2 else b)

    def weights_hash(self) -> str:
        """SHA-256 (16 hex) over every tensor of the state_dict in key order; for an int8 model, of the float
        weights it was quantised from. Hashing takes seconds at full size, so it runs once per set of weights:
        the hash is kept under `weights_version`, which changes whenever a weight does, and recomputed only then."""
        from muq_model.checkpoint import state_dict_hash

        if self._float_weights_hash:
            return self._float_weights_hash
        state = self.state_dict()
        version = weights_version(state)
        if self._weights_hash is None or self._weights_hash[0] != version:
            self._weights_hash = (version, state_dict_hash(state))
        return self._weights_hash[1]

    def fingerprint(self) -> dict:
        """Identifies which vectors this model produces; the catalog never mixes fingerprints."""
        return {
            "model_id": self.model_id,
            "config_hash": self.config.hash(),
            "weights_hash": self.weights_hash(),
            "clip_policy": self.clip_policy.describe(),
            "precision": self.precision,  # which precisions share vectors: muq_model.identity
            **({"numerics_version": NUMERICS_VERSIONS[self.precision]} if self.precision in NUMERICS_VERSIONS else {}),
        }

    def vector_space(self) -> str:
        """Key of the vectors this model makes (see :func:`vector_space`)."""
        return vector_space(self.fingerprint())

    # ---- checkpoint I/O (muq_model.checkpoint does the work) ----------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, tokenizer=None, device=None, dtype=None,
                        official_compat: bool = True, precision: str | None = None) -> MuQMuLan:
        """precision: fp32 | tf32 | bf16 | int8, None for the device's default (see set_precision)."""
        from muq_model.checkpoint import load_pretrained

        model = load_pretrained(cls, name_or_path, tokenizer=tokenizer, device=device, dtype=dtype,
                                official_compat=official_compat)
        return model.set_precision(precision)

    def save_pretrained(self, directory: str | Path) -> Path:
        from muq_model.checkpoint import save_pretrained

        return save_pretrained(self, directory)


def weights_version(state: dict) -> tuple:
    """A cheap key that changes whenever a tensor of `state` may have: per tensor its storage address,
    dtype, shape, device and autograd version counter, which every in-place write advances
    (load_state_dict, optimizer steps, `with torch.no_grad(): p.add_(...)`); `.to()` / `.half()` give
    new storage. Writes through `tensor.data` bypass the counter (as they bypass autograd): nothing here
    does that."""
    return tuple(
        (name, t.data_ptr(), t._version, t.dtype, tuple(t.shape), str(t.device)) if isinstance(t, torch.Tensor)
        else (name, repr(t))
        for name, t in state.items()
    )


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.resample(wave, orig_sr, new_sr)
