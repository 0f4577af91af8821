"""The MuQ audio encoder: mel front end -> Conv2d subsampling stem -> Conformer (spec section 3).

Module and parameter names follow the official checkpoint (`conv.conv.0.conv1`, `conformer.layers.0.
self_attn.linear_q`, ...) so loading is a prefix rename. Dead checkpoint modules (the SSL head `linear`,
`cls_token`, `pos_conv_embed`, target quantisers) are not built; `checkpoint.IGNORED_KEYS` names them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from muq_model.config import MuQConfig
from muq_model.fast_conformer import FastConformer
from muq_model.fast_stem import FoldedStem


class MelFrontEnd(nn.Module):
    """torchaudio MelSpectrogram(n_fft 2048, hop 240, 128 HTK mels, power 2) + AmplitudeToDB, then the
    global-scalar normalisation. Always computed in fp32 (spec Q-D1 fix: the caller casts the result to
    the compute dtype)."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        self.n_fft, self.hop_length = config.n_fft, config.hop_length
        self.mean, self.std = config.mel_mean, config.mel_std
        # Plain fp32 CPU tensors, not buffers: model.to(bfloat16) cannot round them and building the
        # model on the meta device leaves them intact. Copied to other devices once, on first use.
        with torch.device("cpu"):
            fbank = torchaudio.functional.melscale_fbanks(
                config.n_fft // 2 + 1, 0.0, config.sample_rate / 2, config.n_mels, config.sample_rate,
                norm=None, mel_scale="htk",
            )  # (n_freqs, n_mels)
            self._tables = {torch.device("cpu"): (torch.hann_window(config.n_fft), fbank)}

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            window, fbank = self._tables[torch.device("cpu")]
            self._tables[device] = (window.to(device), fbank.to(device))
        return self._tables[device]

    def forward(self, wave: torch.Tensor, *, normalize: bool = True, trim_last_frame: bool = True) -> torch.Tensor:
        wave = wave.float()  # (B, N)
        window, fbank = self.tables(wave.device)
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, self.n_fft, window,
            center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
        ).abs().pow(2.0)  # (B, n_freqs, N // hop + 1)
        mel = torch.matmul(spec.transpose(-1, -2), fbank).transpose(-1, -2)  # (B, n_mels, T + 1)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))  # AmplitudeToDB: ref 1.0, no top_db
        if trim_last_frame:
            db = db[..., :-1]  # (B, n_mels, T) with T = N // hop
        return (db - self.mean) / self.std if normalize else db


class Res2dModule(nn.Module):
    """Residual block: (conv3x3 -> BN -> ReLU -> conv3x3 -> BN) + strided conv3x3 shortcut -> ReLU."""

    def __init__(self, idim: int, odim: int, stride: tuple[int, int]):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.has_shortcut_conv = idim != odim or stride[0] > 1
        if self.has_shortcut_conv:
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = self.bn3(self.conv3(x)) if self.has_shortcut_conv else x
        return F.relu(out + shortcut)


class Conv2dSubsampling(nn.Module):
    """(B, n_mels, T_mel) -> (B, T', encoder_dim): two stride-2 residual blocks, channel-major flatten.

    Training and gradient-enabled calls run the plain modules; eval-mode fp32 CPU calls without
    gradients run the same maths faster with BatchNorm folded in (muq_model/fast_stem.py)."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        s0, s1 = config.time_strides
        self.conv = nn.Sequential(
            Res2dModule(1, config.conv_dim, (2, s0)),
            Res2dModule(config.conv_dim, config.conv_dim, (2, s1)),
        )
        self.linear = nn.Linear(config.conv_dim * (config.n_mels // 4), config.encoder_dim)
        self.folded = FoldedStem()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flat_features(mel))  # (B, T', D)

    def quantise(self) -> None:
        """The int8 mode of the folded path's wide strided convolutions (`runtime.quantise_int8` calls it)."""
        self.folded.quantise()

    def uses_folded_path(self, mel: torch.Tensor) -> bool:
        """Eval mode, no gradients, float32 on CPU without autocast (CUDA's cuDNN picks fast conv algorithms itself)."""
        weight = self.conv[0].conv1.weight
        return not (self.training or torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")) \
            and mel.device.type == weight.device.type == "cpu" and mel.dtype == weight.dtype == torch.float32

    def flat_features(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T_mel) -> (B, T', C * F/4), flattened channel-major (spec Q-N4): the input of `linear`."""
        if self.uses_folded_path(mel):
            return self.folded.flat_features(self.conv, mel)
        x = self.conv(mel.unsqueeze(1))  # (B, C, F/4, T')
        b, c, f, t = x.shape
        return x.permute(0, 3, 1, 2).reshape(b, t, c * f)


def rotary_tables(length: int, head_dim: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (T, 1, head_dim), frequencies laid out as two concatenated halves; computed in fp32 for
    every call, keyed on nothing, so a stale device or dtype cannot leak in (spec Q-D3 fix)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.int64).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim)
    return angles.cos()[:, None, :].to(dtype), angles.sin()[:, None, :].to(dtype)


class ConformerSelfAttention(nn.Module):
    """MHSA with the HF Wav2Vec2Conformer rotary quirk: rotate the layer-normed input before the Q/K
    projections; V sees the unrotated input (spec Q-N1)."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        d = config.encoder_dim
        self.num_heads, self.head_dim = config.num_heads, d // config.num_heads
        self.dropout = config.dropout
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], key_mask: torch.Tensor | None):
        b, t, d = x.shape
        cos, sin = rotary  # (T, 1, head_dim)
        heads = x.view(b, t, self.num_heads, self.head_dim)
        half = self.head_dim // 2
        rotated = torch.cat((-heads[..., half:], heads[..., :half]), dim=-1)
        x_rot = (heads * cos + rotated * sin).view(b, t, d)

        q = self.linear_q(x_rot).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, dh)
        k = self.linear_k(x_rot).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        mask = None
        if key_mask is not None:  # (B, T) True = keep
            mask = torch.zeros(b, 1, 1, t, dtype=q.dtype, device=q.device)
            mask.masked_fill_(~key_mask[:, None, None, :], torch.finfo(q.dtype).min)
        dropout = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, T, dh)
        return self.linear_out(context.transpose(1, 2).reshape(b, t, d))


class ConformerFeedForward(nn.Module):
    def __init__(self, config: MuQConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.encoder_dim, config.ffn_dim)
        self.output_dense = nn.Linear(config.ffn_dim, config.encoder_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.output_dense(self.dropout(F.silu(self.intermediate_dense(x)))))


class ConformerConvModule(nn.Module):
    """LN -> pointwise conv (2D) -> GLU -> depthwise conv -> BN -> SiLU -> pointwise conv."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        d, k = config.encoder_dim, config.conv_kernel_size
        self.layer_norm = nn.LayerNorm(d)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, k, padding=(k - 1) // 2, groups=d, bias=False)
        self.batch_norm = nn.BatchNorm1d(d)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(x).transpose(1, 2)  # (B, D, T)
        x = F.glu(self.pointwise_conv1(x), dim=1)  # first half * sigmoid(second half)
        x = F.silu(self.batch_norm(self.depthwise_conv(x)))
        return self.dropout(self.pointwise_conv2(x)).transpose(1, 2)  # (B, T, D)


class ConformerLayer(nn.Module):
    def __init__(self, config: MuQConfig):
        super().__init__()
        d = config.encoder_dim
        self.ffn1_layer_norm = nn.LayerNorm(d)
        self.ffn1 = ConformerFeedForward(config)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.self_attn = ConformerSelfAttention(config)
        self.self_attn_dropout = nn.Dropout(config.dropout)
        self.conv_module = ConformerConvModule(config)
        self.ffn2_layer_norm = nn.LayerNorm(d)
        self.ffn2 = ConformerFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, rotary, key_mask=None):
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn_dropout(self.self_attn(self.self_attn_layer_norm(x), rotary, key_mask))
        x = x + self.conv_module(x)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class ConformerEncoder(nn.Module):
    """Returns every hidden state: (h0, h1, ..., h11, LN(h12)); the raw h12 is never exposed (Q-N2)."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(ConformerLayer(config) for _ in range(config.encoder_depth))
        self.layer_norm = nn.LayerNorm(config.encoder_dim, eps=config.layer_norm_eps)
        self.fast = FastConformer()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        if key_mask is not None:
            x = x.masked_fill(~key_mask[..., None], 0.0)
        x = self.dropout(x)
        cfg = self.config
        rotary = rotary_tables(x.shape[1], cfg.encoder_dim // cfg.num_heads, cfg.rotary_base, x.device, x.dtype)
        if self.uses_fast_path(x):
            hidden_states = self.fast.hidden_states(self.layers, x, rotary, key_mask)
        else:
            hidden_states = [x]
            for layer in self.layers:
                hidden_states.append(layer(hidden_states[-1], rotary, key_mask))
        return hidden_states[:-1] + [self.layer_norm(hidden_states[-1])]

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        """Eval mode, no gradients or autocast, float32 on CPU."""
        weight = self.layer_norm.weight
        return not (self.training or torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")) \
            and x.device.type == weight.device.type == "cpu" and x.dtype == weight.dtype == torch.float32


class MuQModel(nn.Module):
    """MuQ feature extractor: waveform (B, N) at 24 kHz -> 13 hidden states (B, T', D)."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.mel = MelFrontEnd(config)
        self.conv = Conv2dSubsampling(config)
        self.conformer = ConformerEncoder(config)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.conv.conv[0].conv1.weight.dtype  # a conv: Linear layers may be quantised

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Normalised mel (B, n_mels, T_mel), computed in fp32 without gradients (the front end has no
        parameters), then cast to the compute dtype (spec Q-D1 fix)."""
        self.check_wave(wave)
        with torch.no_grad():
            return self.mel(wave).to(self.compute_dtype)

    def check_wave(self, wave: torch.Tensor) -> None:
        """A clear error for what the mel front end cannot take."""
        if wave.dim() != 2:
            raise ValueError(f"MuQModel expects a (batch, samples) waveform, got shape {tuple(wave.shape)}")
        if wave.shape[1] <= self.config.n_fft // 2:
            raise ValueError(
                f"waveform of {wave.shape[1]} samples is too short: MuQ needs more than {self.config.n_fft // 2}"
            )

    def forward(self, wave: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        self.check_wave(wave)
        if self.training:  # BatchNorm statistics over the whole batch, as upstream
            h0 = self.conv(self.features(wave))  # (B, T', D)
        else:
            # At inference mel + stem run clip by clip: batching gains nothing for the stem's large
            # convolutions, and one clip's activations (conv_dim x n_mels/2 x T_mel/2 floats, 65 MB for
            # 10 s) bound the memory. The Conformer then runs on the whole batch.
            h0 = torch.cat([self.conv(self.features(clip[None])) for clip in wave])  # (B, T', D)
        key_mask = None
        if attention_mask is not None:  # sample-level mask -> frame-level (spec 3.6)
            step = int(wave.shape[1] / h0.shape[1])
            key_mask = attention_mask.bool()[:, ::step][:, : h0.shape[1]]
        return self.conformer(h0, key_mask)
