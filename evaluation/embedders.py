"""What the representation evaluations (ABX, tagging, probes) embed audio with, one small object per choice.

Every embedder has the audio interface of ``MuQMuLan``: ``sample_rate``, ``fingerprint()`` (which keys
its cached vectors) and ``embed_audio(waves, sample_rate=...)`` -> one array per track, so the retrieval
protocol's decoder, cache and ``embed_audio_files`` serve them all. A new representation (a standalone
model) plugs in as one more such object, or through :class:`HiddenStates` when it returns a list of hidden
states from a waveform, as a standalone MuQ checkpoint does (``--model DIR --layer L``).

- the MuQ-MuLan audio vector: the model itself (one (dim,) vector per track);
- :class:`HiddenStates`: every hidden state of a MuQ encoder, mean over time per clip, mean over clips:
  one (layers, width) array per track, from which ``--layer L`` picks a row and probes use every row;
- :class:`MelStatistics`: the baseline, mean and standard deviation over time of MuQ's log-mel bands.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from muq_model.clips import ClipPolicy, split_clips
from muq_model.config import MuQConfig
from muq_model.muq import MelFrontEnd


class MelStatistics:
    """Baseline: per mel band, the mean and standard deviation over the whole track of MuQ's normalised
    log-mel spectrogram (2 x 128 numbers). No learning: what any model must beat."""

    def __init__(self, config: MuQConfig | None = None):
        self.config = config or MuQConfig()
        self.sample_rate = self.config.sample_rate
        self.mel = MelFrontEnd(self.config)

    def fingerprint(self) -> dict:
        front_end = {k: getattr(self.config, k) for k in ("sample_rate", "n_fft", "hop_length", "n_mels", "mel_mean", "mel_std")}
        digest = hashlib.sha256(json.dumps(front_end, sort_keys=True).encode()).hexdigest()[:16]
        return {"model_id": "baseline:mel-statistics", "config_hash": digest, "weights_hash": "none",
                "clip_policy": "whole-track:mean+std-over-time"}

    @torch.inference_mode()
    def embed_audio(self, waves, sample_rate: int | None = None) -> np.ndarray:
        out = []
        for wave in waves:
            mel = self.mel(torch.as_tensor(np.asarray(wave, dtype=np.float32))[None])[0]  # (n_mels, T)
            out.append(torch.cat([mel.mean(dim=1), mel.std(dim=1)]).numpy())
        return np.stack(out)


class HiddenStates:
    """Every hidden state of a MuQ encoder (a module mapping (B, S) waveforms to a list of (B, T, D)),
    mean-pooled over time per clip and averaged over the track's clips: (layers, D) per track."""

    def __init__(self, encoder: torch.nn.Module, *, sample_rate: int, clip_policy: ClipPolicy, fingerprint: dict):
        self.encoder, self.sample_rate, self.clip_policy = encoder, sample_rate, clip_policy
        self._fingerprint = dict(fingerprint, clip_policy=f"{clip_policy.describe()}:hidden-states-mean-over-time")

    @classmethod
    def of_mulan(cls, model) -> HiddenStates:
        """The Conformer hidden states of a MuQ-MuLan's audio tower (h0 = the stem's output ... last)."""
        return cls(model.audio.model, sample_rate=model.sample_rate, clip_policy=model.clip_policy,
                   fingerprint=model.fingerprint())

    @classmethod
    def of_muq(cls, muq, name: str) -> HiddenStates:
        """A standalone MuQ checkpoint (`pretrain` output, OpenMuQ/MuQ-*): its network's hidden states, on the
        same 10 s clips as MuQ-MuLan so that pretrained, untrained and MuLan encoders compare like for like."""
        from muq_model.checkpoint import state_dict_hash

        fingerprint = {"model_id": f"muq:{name}", "config_hash": hashlib.sha256(muq.config_json().encode()).hexdigest()[:16],
                       "weights_hash": state_dict_hash(muq.state_dict()), "precision": "fp32"}
        return cls(muq.model, sample_rate=muq.sample_rate, clip_policy=ClipPolicy(), fingerprint=fingerprint)

    def fingerprint(self) -> dict:
        return self._fingerprint

    @torch.inference_mode()
    def embed_audio(self, waves, sample_rate: int | None = None) -> np.ndarray:
        device = next(self.encoder.parameters()).device
        out = []
        for wave in waves:
            clips, _ = split_clips(torch.as_tensor(np.asarray(wave, dtype=np.float32)), self.clip_policy)
            per_clip = [torch.stack([h[0].float().mean(dim=0) for h in self.encoder(clip[None].to(device))]) for clip in clips]
            out.append(torch.stack(per_clip).mean(dim=0).cpu().numpy())  # (layers, D)
        return np.stack(out)


def pick_layer(vector: np.ndarray, layer: int | None) -> np.ndarray:
    """The vector an evaluation compares: a (layers, D) hidden-state array's row `layer`, else as is."""
    if layer is None:
        return vector
    if vector.ndim != 2:
        raise ValueError("--layer needs hidden states: this embedding has no layers")
    if not -len(vector) <= layer < len(vector):
        raise ValueError(f"--layer {layer} is out of range: the encoder has hidden states 0..{len(vector) - 1}")
    return vector[layer]


def is_standalone_muq(model_name: str) -> bool:
    """A local directory whose config.json is the official MuQ layout (top-level `w2v2_config`), not MuQ-MuLan's."""
    config = Path(model_name) / "config.json"
    try:
        return "w2v2_config" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def load_embedder(model_name: str | None, *, baseline: str | None, hidden_states: bool, device: str | None,
                  precision: str | None = None):
    """(embedder, the MuQ-MuLan model or None): the mel baseline, a model's hidden states, or its audio vector."""
    if baseline == "mel":
        return MelStatistics(), None
    if model_name is None:
        raise ValueError("name the model to evaluate with --model NAME_OR_PATH (or $MUQSEARCH_MODEL)")
    from muq_model import MuQMuLan
    from muq_model.runtime import select_device

    if is_standalone_muq(model_name):
        if not hidden_states:
            raise ValueError(f"{model_name} is a standalone MuQ checkpoint: it has hidden states but no audio vector, use --layer L")
        from muq_model import MuQ

        return HiddenStates.of_muq(MuQ.from_pretrained(model_name, device=select_device(device)).eval(), model_name), None
    model = MuQMuLan.from_pretrained(model_name, device=select_device(device), precision=precision).eval()
    return (HiddenStates.of_mulan(model) if hidden_states else model), model
