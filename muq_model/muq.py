"""The MuQ audio encoder: mel front end -> Conv2d subsampling stem -> Conformer (spec section 3).

Module and parameter names follow the official checkpoint (`conv.conv.0.conv1`, `conformer.layers.0.
self_attn.linear_q`, ...) so loading is a prefix rename. Dead checkpoint modules (the SSL head `linear`,
`cls_token`, `pos_conv_embed`, target quantisers) are not built; `checkpoint.IGNORED_KEYS` names them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from muq_model.config import MuQConfig


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

    def folded(self) -> FoldedRes2d:
        """The block's eval-time weights for `forward_folded` (float64 maths, rounded once to float32)."""
        w1, b1 = fold_batch_norm(self.conv1, self.bn1)
        w2, b2 = fold_batch_norm(self.conv2, self.bn2)
        w3, b3 = fold_batch_norm(self.conv3, self.bn3)
        strided = torch.cat([w1, w3])  # conv1 | conv3: one conv with 2 * odim outputs, as they share input and stride
        return FoldedRes2d(
            strided=strided.permute(2, 3, 1, 0).reshape(-1, strided.shape[0]).float(),  # (9 * idim, 2 * odim)
            strided_bias=torch.cat([b1, b3 + b2]).float(),  # conv2's bias rides on the shortcut
            winograd=winograd_weights(w2).float(),
        )

    def forward_folded(self, x: torch.Tensor, folded: FoldedRes2d) -> torch.Tensor:
        """Eval-only forward of one clip, channels last: (F, T, idim) -> (F / s_f, T / s_t, odim).
        BatchNorm folded into the convs, conv1 and conv3 as one strided conv, conv2 by Winograd."""
        both = conv3x3_im2col(x, folded.strided, folded.strided_bias, self.stride)  # (F', T', 2 * odim)
        main, shortcut = both.chunk(2, dim=-1)
        out = winograd_conv3x3(main, folded.winograd, relu_input=True)  # (F', T', odim), conv2 without its bias
        return F.relu_(out.add_(shortcut))


class Conv2dSubsampling(nn.Module):
    """(B, n_mels, T_mel) -> (B, T', encoder_dim): two stride-2 residual blocks, channel-major flatten.

    Training and gradient-enabled calls run the plain modules. Eval-mode fp32 CPU calls without gradients
    run the folded path (`Res2dModule.forward_folded`), which gives the same result to float32 rounding
    (tests/test_model_stem.py) in less time: 0.90 s instead of 1.26 s per 10 s clip at full size on 2
    threads, where the stem is ~70 % of the model's FLOPs."""

    def __init__(self, config: MuQConfig):
        super().__init__()
        s0, s1 = config.time_strides
        self.conv = nn.Sequential(
            Res2dModule(1, config.conv_dim, (2, s0)),
            Res2dModule(config.conv_dim, config.conv_dim, (2, s1)),
        )
        self.linear = nn.Linear(config.conv_dim * (config.n_mels // 4), config.encoder_dim)
        self._folded: tuple[list[torch.Tensor], list[FoldedRes2d]] | None = None  # (source snapshot, folded)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flat_features(mel))  # (B, T', D)

    def uses_folded_path(self, mel: torch.Tensor) -> bool:
        """Eval mode, no gradients, float32 on CPU (CUDA's cuDNN picks fast conv algorithms itself)."""
        weight = self.conv[0].conv1.weight
        return not (self.training or torch.is_grad_enabled()) and mel.device.type == weight.device.type == "cpu" \
            and mel.dtype == weight.dtype == torch.float32

    def flat_features(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T_mel) -> (B, T', C * F/4), flattened channel-major (spec Q-N4): the input of `linear`."""
        if not self.uses_folded_path(mel):
            x = self.conv(mel.unsqueeze(1))  # (B, C, F/4, T')
            b, c, f, t = x.shape
            return x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        folded = self.folded_blocks()
        out = []
        for clip in mel:  # one clip at a time: the batch buys nothing at these sizes and bounds the memory
            x = clip[:, :, None]  # (F, T, 1) channels last
            for block, weights in zip(self.conv, folded, strict=True):
                x = block.forward_folded(x, weights)  # (F/4, T', C) after both blocks
            f, t, c = x.shape
            out.append(x.permute(1, 2, 0).reshape(t, c * f))
        return torch.stack(out)

    def folded_blocks(self) -> list[FoldedRes2d]:
        """Folded weights, recomputed whenever a stem parameter or BatchNorm statistic differs from the
        snapshot they were made from (training steps, load_state_dict, in-place edits): exact, and a
        28 MB compare per clip (full size) instead of ~0.1 s of refolding."""
        sources = list(self.conv.state_dict().values())
        if self._folded is None or any(
            a.shape != b.shape or not torch.equal(a, b) for a, b in zip(self._folded[0], sources, strict=True)
        ):
            with torch.no_grad():
                self._folded = ([t.clone() for t in sources], [block.folded() for block in self.conv])
        return self._folded[1]


@dataclass
class FoldedRes2d:
    """A Res2dModule's eval-time weights (see Res2dModule.folded)."""

    strided: torch.Tensor  # (9 * idim, 2 * odim): conv1 | conv3 as an im2col matrix, rows ordered (kh, kw, c)
    strided_bias: torch.Tensor  # (2 * odim,): conv1's bias | conv3's + conv2's
    winograd: torch.Tensor  # (36, odim, odim): conv2 in the Winograd domain (winograd_weights)


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv -> BN (running statistics) as one conv, in float64: weight (O, I, 3, 3), bias (O,)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale[:, None, None, None]
    return weight, (conv.bias.double() - bn.running_mean.double()) * scale + bn.bias.double()


# The folded stem works through an image a band of rows at a time, each patch matrix or Winograd buffer
# about this size: bounded memory. Measured at full size, 2 threads: 16 MB bands are fastest on a quiet
# machine (stem 0.84 s vs 0.90 s at 32 MB), but on a busy one the many small ops leave threads waiting
# at barriers (2.3 s vs 2.0 s); 32 MB is the compromise.
STEM_CHUNK_BYTES = 32 * 2**20


def conv3x3_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """3x3 conv, padding 1, channels last, as patches @ weight: (H, W, C) -> (ceil(H/s_h), ceil(W/s_w), O),
    a band of output rows at a time (STEM_CHUNK_BYTES of patches)."""
    patches = F.pad(x, (0, 0, 1, 1, 1, 1)).unfold(0, 3, stride[0]).unfold(1, 3, stride[1])  # (H', W', C, 3, 3) view
    h_out, w_out, c = patches.shape[:3]
    out = x.new_empty(h_out, w_out, weight.shape[1])
    rows = max(1, STEM_CHUNK_BYTES // (w_out * 9 * c * x.element_size()))
    for r in range(0, h_out, rows):
        chunk = patches[r : r + rows].permute(0, 1, 3, 4, 2).reshape(-1, 9 * c)  # (n * W', 9 C), rows (kh, kw, c)
        torch.addmm(bias, chunk, weight, out=out[r : r + rows].view(chunk.shape[0], -1))
    return out


# ---- Winograd F(4x4, 3x3) ---------------------------------------------------------------------------
# A stride-1 3x3 conv makes each 4x4 output tile from a 6x6 input tile d with 36 products per channel
# pair instead of 144: transform the input tiles (V = B^T d B), multiply point by point over channels
# (one batched matmul for the 36 tile points), transform back (Y = A^T M A). The matrices are the
# Cook-Toom construction on the points 0, 1, -1, 2, -1/2 and infinity: of the usual choices these gave
# the smallest float32 error here (~1e-5 relative, vs 3e-5 with 0, +-1, +-2; tests/test_model_stem.py).

WINOGRAD_TILE = 4  # output tile m; input tile m + 2
WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -0.5)


def winograd_matrices(m: int = WINOGRAD_TILE, points=WINOGRAD_POINTS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cook-Toom matrices of F(m, 3) in float64: A^T (m, n), G (n, 3), B^T (n, n), n = m + 2, from n - 1
    finite points and the point at infinity. In 1-D, y = A^T [(G g) * (B^T d)] is the correlation
    y_i = sum_k g_k d_(i+k) of a 3-tap filter g with n inputs d."""
    n = m + 2
    if len(points) != n - 1:
        raise ValueError(f"F({m}, 3) needs {n - 1} finite points, got {len(points)}")
    a_t = torch.zeros(m, n, dtype=torch.float64)
    g = torch.zeros(n, 3, dtype=torch.float64)
    b_t = torch.zeros(n, n, dtype=torch.float64)
    for j, p in enumerate(points):
        others = [q for q in points if q != p]
        a_t[:, j] = torch.tensor([p**i for i in range(m)], dtype=torch.float64)
        g[j] = torch.tensor([1.0, p, p * p], dtype=torch.float64) / math.prod(p - q for q in others)
        b_t[j, : n - 1] = polynomial_from_roots(others)
    a_t[m - 1, n - 1] = g[n - 1, 2] = 1.0  # the point at infinity
    b_t[n - 1] = polynomial_from_roots(points)
    return a_t, g, b_t


def polynomial_from_roots(roots) -> torch.Tensor:
    """Coefficients of prod (x - r), lowest power first (float64)."""
    coefficients = torch.ones(1, dtype=torch.float64)
    for r in roots:
        coefficients = F.pad(coefficients, (1, 0)) - r * F.pad(coefficients, (0, 1))
    return coefficients


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) -> (n * n, I, O): U = G w G^T per filter, tile points row-major, in float64."""
    _, g, _ = winograd_matrices()
    n = g.shape[0]
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.double(), g)  # (n, n, I, O)
    return u.reshape(n * n, weight.shape[1], weight.shape[0])


def winograd_conv3x3(x: torch.Tensor, weights: torch.Tensor, *, relu_input: bool = False) -> torch.Tensor:
    """Stride-1 3x3 conv, padding 1, no bias, channels last: (H, W, C) -> (H, W, O) with weights from
    `winograd_weights`, a band of tile rows at a time (STEM_CHUNK_BYTES per transform buffer).
    relu_input: conv of ReLU(x), the ReLU applied while x is copied into the padded buffer."""
    a_t, _, b_t = winograd_matrices()
    m, n = a_t.shape
    in_transform = torch.kron(b_t, b_t).to(x.dtype)  # (n*n, n*n): B^T d B on flattened tiles
    out_transform = torch.kron(a_t, a_t).to(x.dtype)  # (m*m, n*n): A^T M A
    h, w, c = x.shape
    tiles_h, tiles_w = -(-h // m), -(-w // m)
    padded = x.new_zeros(tiles_h * m + 2, tiles_w * m + 2, c)
    interior = padded[1 : h + 1, 1 : w + 1]
    if relu_input:
        torch.clamp(x, min=0, out=interior)
    else:
        interior.copy_(x)
    out = x.new_empty(tiles_h, m, tiles_w, m, weights.shape[-1])
    rows = max(1, STEM_CHUNK_BYTES // (tiles_w * n * n * max(c, weights.shape[-1]) * x.element_size()))
    for r in range(0, tiles_h, rows):
        slab = padded[r * m : (r + rows) * m + 2]  # input rows of tile rows r .. r + rows - 1
        d = slab.unfold(0, n, m).unfold(1, n, m)  # (t_h, t_w, C, n, n): overlapping tiles, a view
        t_h = d.shape[0]
        d = d.permute(3, 4, 0, 1, 2).reshape(n * n, -1)  # (n*n, t_h t_w C)
        v = (in_transform @ d).view(n * n, t_h * tiles_w, c)  # (n*n, P, C)
        products = torch.bmm(v, weights)  # (n*n, P, O): per tile point, sum over channels
        y = (out_transform @ products.view(n * n, -1)).view(m, m, t_h, tiles_w, -1)  # (m, m, t_h, t_w, O)
        out[r : r + t_h] = y.permute(2, 0, 3, 1, 4)
    return out.view(tiles_h * m, tiles_w * m, -1)[:h, :w]


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

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        if key_mask is not None:
            x = x.masked_fill(~key_mask[..., None], 0.0)
        x = self.dropout(x)
        cfg = self.config
        rotary = rotary_tables(x.shape[1], cfg.encoder_dim // cfg.num_heads, cfg.rotary_base, x.device, x.dtype)
        hidden_states = []
        for layer in self.layers:
            hidden_states.append(x)
            x = layer(x, rotary, key_mask)
        hidden_states.append(self.layer_norm(x))
        return hidden_states


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
        with torch.no_grad():
            return self.mel(wave).to(self.compute_dtype)

    def forward(self, wave: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        if wave.dim() != 2:
            raise ValueError(f"MuQModel expects a (batch, samples) waveform, got shape {tuple(wave.shape)}")
        if wave.shape[1] <= self.config.n_fft // 2:
            raise ValueError(
                f"waveform of {wave.shape[1]} samples is too short: MuQ needs more than {self.config.n_fft // 2}"
            )
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
