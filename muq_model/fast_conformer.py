"""The Conformer's eval-time fast path on CPU: the same maths as `ConformerLayer.forward` (muq.py) in
fewer, larger and fused operations. `ConformerEncoder` runs it for eval-mode float32 CPU calls without
gradients or autocast (the int8 mode included); training and every other call run the plain modules.

What it changes, each exact up to float32 rounding (tests/test_model_conformer.py):
- Linear layers (int8 ones excepted) run on oneDNN (`torch.ops.mkldnn._linear_pointwise`) instead of the
  BLAS behind F.linear, with the SiLU of the feed-forwards and every residual add fused into the matmul:
  on this project's AMD EPYC (AVX-512) MKL's sgemm reaches about half of oneDNN's speed at Conformer
  sizes (250 rows per clip). Where the op is missing, F.linear runs instead.
- The rotary embedding takes 3 operations instead of 5.
- The feed-forwards' 0.5 scale moves onto the hidden activations and the bias (exact: a power of two).
- The convolution module stays in (B, T, D): the pointwise convolutions are matmuls, the depthwise one a
  channels-last conv2d with the eval-mode BatchNorm folded into its weights; no transposed copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _has_onednn_linear() -> bool:
    try:
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        torch.ops.mkldnn._linear_pointwise.binary(x, torch.ones(2, 4), w, None, "add")
        return True
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _has_onednn_linear()


def matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, silu: bool = False,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), then SiLU (silu=True) or + residual: fused on oneDNN where available."""
    if ONEDNN_LINEAR:
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "swish" if silu else "none", [], "")
    out = F.linear(x, weight, bias)
    if silu:
        return F.silu(out, inplace=True)
    return out if residual is None else out.add_(residual)


def dense(module: nn.Module, x: torch.Tensor, *, silu: bool = False, residual: torch.Tensor | None = None,
          scale: float = 1.0) -> torch.Tensor:
    """silu(module(x)) with silu=True, else residual + scale * module(x). An nn.Linear runs as `matmul`
    (x is then scaled in place: scale must be a power of two, so that this is exact); any other module
    (the int8 Linear of muq_model.runtime) runs as it is."""
    if type(module) is nn.Linear:
        bias = module.bias
        if scale != 1.0:
            x, bias = x.mul_(scale), (None if bias is None else bias * scale)
        return matmul(x, module.weight, bias, silu=silu, residual=residual)
    out = module(x)
    if silu:
        return F.silu(out, inplace=True)
    return out.mul_(scale) if residual is None else torch.add(residual, out, alpha=scale)


@dataclass
class FoldedDepthwise:
    """A convolution module's depthwise conv with its eval-mode BatchNorm folded in (channels-last conv2d)."""

    weight: torch.Tensor  # (D, 1, 1, k)
    bias: torch.Tensor  # (D,)


def fold_depthwise(conv_module) -> FoldedDepthwise:
    bn = conv_module.batch_norm
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv_module.depthwise_conv.weight.double() * scale[:, None, None]  # (D, 1, k)
    bias = bn.bias.double() - bn.running_mean.double() * scale
    return FoldedDepthwise(weight[:, :, None, :].float(), bias.float())


class FastConformer:
    """The folded depthwise convolutions of a ConformerEncoder's layers, refolded when any parameter or
    buffer of the layers is replaced or modified in place (tracked by storage pointer and version counter)."""

    def __init__(self):
        self._key: tuple | None = None
        self._folded: list[FoldedDepthwise] = []

    def folded(self, layers: nn.ModuleList) -> list[FoldedDepthwise]:
        tensors = [*layers.parameters(), *layers.buffers()]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if key != self._key:
            with torch.no_grad():
                self._folded = [fold_depthwise(layer.conv_module) for layer in layers]
            self._key = key
        return self._folded

    def hidden_states(self, layers: nn.ModuleList, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
                      key_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """[x, layer 1's output, ..., the last layer's output], as the plain loop over `layers`."""
        cos, sin = rotary  # (T, 1, head_dim)
        half = sin.shape[-1] // 2
        sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        mask = None
        if key_mask is not None:  # (B, T) True = keep
            mask = torch.zeros(key_mask.shape[0], 1, 1, key_mask.shape[1], dtype=x.dtype)
            mask.masked_fill_(~key_mask[:, None, None, :], torch.finfo(x.dtype).min)
        out = [x]
        for layer, depthwise in zip(layers, self.folded(layers), strict=True):
            out.append(self.layer_forward(layer, depthwise, out[-1], cos, sin_signed, mask))
        return out

    def layer_forward(self, layer, depthwise: FoldedDepthwise, x: torch.Tensor, cos: torch.Tensor,
                      sin_signed: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """ConformerLayer.forward for (B, T, D) x; cos and sin_signed (T, 1, head_dim)."""
        x = self._feed_forward(layer.ffn1, layer.ffn1_layer_norm, x)

        attn = layer.self_attn
        b, t, d = x.shape
        h, dh = attn.num_heads, attn.head_dim
        heads = self._norm(layer.self_attn_layer_norm, x).view(b, t, h, dh)
        # rotate_half(x) * sin == roll(x, dh / 2) * [-sin_first_half, sin_second_half]
        rotated = torch.addcmul(heads * cos, heads.roll(dh // 2, dims=-1), sin_signed).view(b, t, d)
        q = dense(attn.linear_q, rotated).view(b, t, h, dh).transpose(1, 2)  # (B, H, T, dh)
        k = dense(attn.linear_k, rotated).view(b, t, h, dh).transpose(1, 2)
        v = dense(attn.linear_v, heads.view(b, t, d)).view(b, t, h, dh).transpose(1, 2)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, dh)
        x = dense(attn.linear_out, context.transpose(1, 2).reshape(b, t, d), residual=x)

        conv = layer.conv_module
        y = F.glu(matmul(self._norm(conv.layer_norm, x), conv.pointwise_conv1.weight[:, :, 0], None), dim=-1)
        # (B, T, D) seen as a channels-last (B, D, 1, T) image: the depthwise conv reads it without a copy
        k = depthwise.weight.shape[-1]
        y = F.conv2d(y.view(b, 1, t, d).permute(0, 3, 1, 2), depthwise.weight, depthwise.bias,
                     padding=(0, (k - 1) // 2), groups=d)
        y = F.silu(y.permute(0, 2, 3, 1).reshape(b, t, d), inplace=True)
        x = matmul(y, conv.pointwise_conv2.weight[:, :, 0], None, residual=x)

        x = self._feed_forward(layer.ffn2, layer.ffn2_layer_norm, x)
        return self._norm(layer.final_layer_norm, x)

    @staticmethod
    def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _feed_forward(self, ffn, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """x + 0.5 * ffn(norm(x))."""
        y = dense(ffn.intermediate_dense, self._norm(norm, x), silu=True)
        return dense(ffn.output_dense, y, residual=x, scale=0.5)
