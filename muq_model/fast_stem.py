"""The stem's eval-time fast path: BatchNorm folded into the convolutions, each residual block's conv1 and
conv3 as one strided convolution (the first block's, with one input channel, an im2col matmul; the second
block's, stride 2 x 2, a stride-2 Winograd algorithm with 81 products per 4 x 4 outputs instead of 144),
conv2 by Winograd F(4x4, 3x3), channels last and a band of rows at a time. `Conv2dSubsampling` (muq.py)
runs it for eval-mode fp32 CPU calls without gradients; it gives the plain modules' result to float32
rounding (tests/test_model_stem.py) in less time: 0.90 s instead of 1.26 s per 10 s clip at full size on
2 threads (before the stride-2 Winograd), where the stem is ~70 % of the model's FLOPs.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from muq_model.runtime import int8_matmul, pack_int8


class FoldedStem:
    """The folded weights of a stem's residual blocks, and the forward pass that uses them."""

    def __init__(self):
        self._sources: list[torch.Tensor] | None = None  # snapshot of the blocks' state the weights came from
        self._blocks: list[FoldedRes2d] = []
        self.int8 = False  # see quantise
        self._scratch = Scratch()
        self._scratch_lock = threading.Lock()
        self._weights_lock = threading.Lock()

    def quantise(self) -> None:
        """The int8 mode: from now on the strided convolutions of every block with more than one input
        channel (at full size the second block's, ~60 % of the stem's multiply-adds) run as int8 matmuls."""
        self.int8, self._sources = True, None

    def flat_features(self, blocks: nn.Sequential, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T_mel) -> (B, T', C * F/4), flattened channel-major, as the plain stem."""
        folded = self.weights(blocks)
        # The kept buffers serve one call at a time; a concurrent call allocates its own.
        mine = self._scratch_lock.acquire(blocking=False)
        scratch = self._scratch if mine else Scratch()
        try:
            out = []
            for clip in mel:  # one clip at a time: the batch buys nothing at these sizes and bounds the memory
                x = clip[:, :, None]  # (F, T, 1) channels last
                for i, (block, weights) in enumerate(zip(blocks, folded, strict=True)):
                    x = forward_folded(x, weights, block.stride, scratch.prefixed(f"{i}."))  # last: (F/4, T', C)
                f, t, c = x.shape
                out.append(x.permute(1, 2, 0).reshape(t, c * f))
            return torch.stack(out)
        finally:
            if mine:
                self._scratch_lock.release()

    def weights(self, blocks: nn.Sequential) -> list[FoldedRes2d]:
        """Folded weights, recomputed whenever a stem parameter or BatchNorm statistic differs from the
        snapshot they were made from (training steps, load_state_dict, in-place edits): exact, and a
        28 MB compare per clip (full size) instead of ~0.1 s of refolding."""
        sources = list(blocks.state_dict().values())
        with self._weights_lock:  # a concurrent call must not see the new snapshot before its weights
            if self._sources is None or any(
                a.shape != b.shape or not torch.equal(a, b) for a, b in zip(self._sources, sources, strict=True)
            ):
                with torch.no_grad():
                    self._blocks = [fold_res2d(b, int8=self.int8) for b in blocks]
                    self._sources = [t.clone() for t in sources]
            return self._blocks


class Scratch:
    """The stem's intermediates (full size, 10 s clips: 510 MiB, the padded images and results of each
    convolution and the per-band temporaries), kept from one clip and call to the next: glibc maps every
    allocation over 32 MB afresh and trims freed heap, and each fresh page costs a fault (measured: 0.2-0.3 s
    of a 3.4 s 10 s clip at 1 thread). One buffer per name, replaced when its shape changes (`band`: grown)."""

    def __init__(self, buffers: dict | None = None, prefix: str = ""):
        self._buffers = {} if buffers is None else buffers
        self._prefix = prefix

    def prefixed(self, prefix: str) -> Scratch:
        """A view of the same buffers under names starting with `prefix`."""
        return Scratch(self._buffers, self._prefix + prefix)

    def get(self, name: str, shape: tuple, like: torch.Tensor, *, key: tuple = (),
            zeroed: bool = False) -> torch.Tensor:
        """An uninitialised (or, the first time, zeroed) buffer of `shape` named `name`, kept while `key`
        and the shape stay the same: a zeroed buffer whose callers write the same region every time (a padded
        image's interior, fixed by the image's shape in `key`) keeps its zeros elsewhere."""
        name, key = self._prefix + name, (tuple(shape), like.dtype, like.device, key)
        kept = self._buffers.get(name)
        if kept is None or kept[0] != key or stale(kept[1]):
            kept = key, like.new_zeros(shape) if zeroed else like.new_empty(shape)
            self._buffers[name] = kept
        return kept[1]

    def band(self, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous `shape` in a flat buffer shared by every prefix and kept at the largest
        size asked for: the per-band temporaries of all convolutions take turns in it."""
        numel = math.prod(shape)
        kept = self._buffers.get(name)
        if kept is None or kept[0] != (like.dtype, like.device) or kept[1].numel() < numel or stale(kept[1]):
            kept = (like.dtype, like.device), like.new_empty(numel)
            self._buffers[name] = kept
        return kept[1][:numel].view(shape)


def stale(buffer: torch.Tensor) -> bool:
    """A buffer made under torch.inference_mode cannot be written outside it (e.g. after an inference
    call, training's feature pass): such a buffer is replaced."""
    return buffer.is_inference() and not torch.is_inference_mode_enabled()


@dataclass
class FoldedRes2d:
    """A Res2dModule's eval-time weights (see fold_res2d)."""

    strided: torch.Tensor  # (9 * idim, 2 * odim): conv1 | conv3 as an im2col matrix, rows ordered (kh, kw, c)
    strided_bias: torch.Tensor  # (2 * odim,): conv1's bias | conv3's + conv2's
    winograd: torch.Tensor  # (36, odim, odim): conv2 in the Winograd domain (winograd_weights)
    strided_winograd: torch.Tensor | None = None  # (81, idim, 2 * odim): conv1 | conv3 by stride-2 Winograd
    strided_int8: object = None  # int8 mode: `strided` and its bias packed by runtime.pack_int8, used instead


def fold_res2d(block, *, int8: bool = False) -> FoldedRes2d:
    """A Res2dModule's eval-time weights for `forward_folded` (float64 maths, rounded once to float32);
    int8: also its strided convolutions packed as an int8 matmul, unless it has one input channel (the
    first block: 9-wide patches, too thin a matmul to gain)."""
    w1, b1 = fold_batch_norm(block.conv1, block.bn1)
    w2, b2 = fold_batch_norm(block.conv2, block.bn2)
    w3, b3 = fold_batch_norm(block.conv3, block.bn3)
    both = torch.cat([w1, w3])  # conv1 | conv3: one conv with 2 * odim outputs, as they share input and stride
    strided = both.permute(2, 3, 1, 0).reshape(-1, both.shape[0]).float()  # (9 * idim, 2 * odim)
    strided_bias = torch.cat([b1, b3 + b2]).float()  # conv2's bias rides on the shortcut
    wide = block.conv1.in_channels > 1
    packed = pack_int8(strided.T, strided_bias) if int8 and wide else None
    fast_strided = None
    if packed is None and wide and tuple(block.stride) == (2, 2):
        fast_strided = winograd_weights(both, stride=2).float()
    return FoldedRes2d(strided, strided_bias, winograd_weights(w2).float(), fast_strided, packed)


def forward_folded(x: torch.Tensor, folded: FoldedRes2d, stride: tuple[int, int],
                   scratch: Scratch | None = None) -> torch.Tensor:
    """A Res2dModule's eval forward of one clip, channels last: (F, T, idim) -> (F / s_f, T / s_t, odim);
    the large intermediates and the result in `scratch`'s buffers when given (overwritten by the next call)."""
    scratch = scratch or Scratch()
    if folded.strided_winograd is not None:
        both = winograd_conv3x3(x, folded.strided_winograd, stride=2, scratch=scratch.prefixed("strided."))
        both = both.add_(folded.strided_bias)  # (F', T', 2 odim)
    else:
        both = conv3x3_im2col(x, folded.strided, folded.strided_bias, stride, int8=folded.strided_int8,
                              out=scratch.get("strided", conv_output_shape(x, stride, folded.strided.shape[1]), x),
                              scratch=scratch.prefixed("strided."))
    main, shortcut = both.chunk(2, dim=-1)
    # conv2 without its bias
    out = winograd_conv3x3(main, folded.winograd, relu_input=True, scratch=scratch.prefixed("conv2."))
    return F.relu_(out.add_(shortcut))


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


def conv_output_shape(x: torch.Tensor, stride: tuple[int, int], channels: int) -> tuple[int, int, int]:
    """Output shape of a 3x3 conv with padding 1 on a channels-last (H, W, C) image."""
    return -(-x.shape[0] // stride[0]), -(-x.shape[1] // stride[1]), channels


def conv3x3_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int], *,
                   int8=None, out: torch.Tensor | None = None, scratch: Scratch | None = None) -> torch.Tensor:
    """3x3 conv, padding 1, channels last, as patches @ weight: (H, W, C) -> (ceil(H/s_h), ceil(W/s_w), O),
    a band of output rows at a time (STEM_CHUNK_BYTES of patches, in `scratch` when given), into `out` when
    given; with `int8` (weight and bias packed by runtime.pack_int8) an int8 matmul, each band's patches
    quantised with their own scale."""
    scratch = scratch or Scratch()
    h, w, c = x.shape
    padded = scratch.get("padded", (h + 2, w + 2, c), x, key=x.shape, zeroed=True)
    padded[1 : h + 1, 1 : w + 1] = x
    patches = padded.unfold(0, 3, stride[0]).unfold(1, 3, stride[1])  # (H', W', C, 3, 3) view
    h_out, w_out, c = patches.shape[:3]
    if out is None:
        out = x.new_empty(h_out, w_out, weight.shape[1])
    rows = max(1, STEM_CHUNK_BYTES // (w_out * 9 * c * x.element_size()))
    for r in range(0, h_out, rows):
        band = patches[r : r + rows]
        chunk = scratch.band("patches", (band.shape[0], w_out, 3, 3, c), x)
        chunk = chunk.copy_(band.permute(0, 1, 3, 4, 2)).view(-1, 9 * c)  # (n * W', 9 C), rows (kh, kw, c)
        target = out[r : r + rows].view(chunk.shape[0], -1)
        if int8 is None:
            torch.addmm(bias, chunk, weight, out=target)
        else:
            target.copy_(int8_matmul(chunk, int8))
    return out


# ---- Winograd F(4x4, 3x3) ---------------------------------------------------------------------------
# A stride-1 3x3 conv makes each 4x4 output tile from a 6x6 input tile d with 36 products per channel
# pair instead of 144: transform the input tiles (V = B^T d B), multiply point by point over channels
# (one batched matmul for the 36 tile points), transform back (Y = A^T M A). The matrices are the
# Cook-Toom construction on the points 0, 1, -1, 2, -1/2 and infinity: of the usual choices these gave
# the smallest float32 error here (~1e-5 relative, vs 3e-5 with 0, +-1, +-2; tests/test_model_stem.py).

WINOGRAD_TILE = 4  # output tile m; input tile m + 2
WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -0.5)
STRIDED_POINTS = (0.0, 1.0, -1.0, 0.5)  # F(4, 2) inside the stride-2 algorithm (strided_winograd_matrices)


def winograd_matrices(m: int = WINOGRAD_TILE, points=WINOGRAD_POINTS, taps: int = 3
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cook-Toom matrices of F(m, taps) in float64: A^T (m, n), G (n, taps), B^T (n, n), n = m + taps - 1,
    from n - 1 finite points and the point at infinity. In 1-D, y = A^T [(G g) * (B^T d)] is the
    correlation y_i = sum_k g_k d_(i+k) of a filter g of `taps` taps with n inputs d."""
    n = m + taps - 1
    if len(points) != n - 1:
        raise ValueError(f"F({m}, {taps}) needs {n - 1} finite points, got {len(points)}")
    a_t = torch.zeros(m, n, dtype=torch.float64)
    g = torch.zeros(n, taps, dtype=torch.float64)
    b_t = torch.zeros(n, n, dtype=torch.float64)
    for j, p in enumerate(points):
        others = [q for q in points if q != p]
        a_t[:, j] = torch.tensor([p**i for i in range(m)], dtype=torch.float64)
        g[j] = torch.tensor([p**k for k in range(taps)], dtype=torch.float64) / math.prod(p - q for q in others)
        b_t[j, : n - 1] = polynomial_from_roots(others)
    a_t[m - 1, n - 1] = g[n - 1, taps - 1] = 1.0  # the point at infinity
    b_t[n - 1] = polynomial_from_roots(points)
    return a_t, g, b_t


def strided_winograd_matrices(m: int = WINOGRAD_TILE, points=STRIDED_POINTS
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stride-2 3-tap correlation y_i = g_0 d_2i + g_1 d_(2i+1) + g_2 d_(2i+2) (m outputs from n = 2m + 1
    inputs) with n products instead of 3m: taps 0 and 2 see the even inputs d_0, d_2, ... as a 2-tap
    correlation, F(m, 2), and tap 1 multiplies the odd inputs one by one. A^T (m, n), G (n, 3), B^T (n, n)
    in float64, used as winograd_matrices' are."""
    a2, g2, b2 = winograd_matrices(m, points, taps=2)  # (m, m + 1), (m + 1, 2), (m + 1, m + 1)
    k, n = m + 1, 2 * m + 1
    a_t = torch.cat([a2, torch.eye(m, dtype=torch.float64)], dim=1)
    g = torch.zeros(n, 3, dtype=torch.float64)
    g[:k, 0], g[:k, 2], g[k:, 1] = g2[:, 0], g2[:, 1], 1.0
    b_t = torch.zeros(n, n, dtype=torch.float64)
    b_t[:k, 0::2], b_t[k:, 1::2] = b2, torch.eye(m, dtype=torch.float64)
    return a_t, g, b_t


def polynomial_from_roots(roots) -> torch.Tensor:
    """Coefficients of prod (x - r), lowest power first (float64)."""
    coefficients = torch.ones(1, dtype=torch.float64)
    for r in roots:
        coefficients = F.pad(coefficients, (1, 0)) - r * F.pad(coefficients, (0, 1))
    return coefficients


def winograd_weights(weight: torch.Tensor, *, stride: int = 1) -> torch.Tensor:
    """(O, I, 3, 3) -> (n * n, I, O): U = G w G^T per filter, tile points row-major, in float64, for
    `winograd_conv3x3` with the same stride."""
    _, g, _ = winograd_matrices() if stride == 1 else strided_winograd_matrices()
    n = g.shape[0]
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.double(), g)  # (n, n, I, O)
    return u.reshape(n * n, weight.shape[1], weight.shape[0])


def winograd_conv3x3(x: torch.Tensor, weights: torch.Tensor, *, stride: int = 1, relu_input: bool = False,
                     scratch: Scratch | None = None) -> torch.Tensor:
    """3x3 conv of stride 1 or 2 (both axes), padding 1, no bias, channels last: (H, W, C) ->
    (ceil(H / stride), ceil(W / stride), O) with weights from `winograd_weights` of the same stride, a band
    of tile rows at a time (STEM_CHUNK_BYTES per transform buffer).
    relu_input: conv of ReLU(x), the ReLU applied while x is copied into the padded buffer. scratch: where the
    padded input and the result live (the result is overwritten by the next call with the same scratch)."""
    scratch = scratch or Scratch()
    a_t, _, b_t = winograd_matrices() if stride == 1 else strided_winograd_matrices()
    m, n = a_t.shape  # outputs and products per tile and axis; n inputs per tile and axis, m * stride apart
    step = m * stride
    a_t, b_t = a_t.to(x.dtype), b_t.to(x.dtype)
    h, w, c = x.shape
    h_out, w_out = -(-h // stride), -(-w // stride)
    tiles_h, tiles_w = -(-h_out // m), -(-w_out // m)
    padded = scratch.get("padded", (tiles_h * step + n - step, tiles_w * step + n - step, c), x, key=x.shape,
                         zeroed=True)
    interior = padded[1 : h + 1, 1 : w + 1]
    if relu_input:
        torch.clamp(x, min=0, out=interior)
    else:
        interior.copy_(x)
    out = scratch.get("out", (tiles_h, m, tiles_w, m, weights.shape[-1]), x)
    o = weights.shape[-1]
    rows = max(1, STEM_CHUNK_BYTES // (tiles_w * n * n * max(c, o) * x.element_size()))
    for r in range(0, tiles_h, rows):
        slab = padded[r * step : (r + rows) * step + n - step]  # input rows of tile rows r .. r + rows - 1
        tiles = slab.unfold(0, n, step).unfold(1, n, step)  # (t_h, t_w, C, n, n): overlapping tiles, a view
        t_h = tiles.shape[0]
        p = t_h * tiles_w
        d = scratch.band("d", (n, n, t_h, tiles_w, c), x).copy_(tiles.permute(3, 4, 0, 1, 2)).view(n, n, p * c)
        # B^T d B and A^T M A one axis at a time: 2 n^3 products per tile and channel instead of n^4
        half = torch.bmm(b_t.expand(n, n, n), d, out=scratch.band("half", (n, n, p * c), x))
        v = torch.mm(b_t, half.view(n, -1), out=d.view(n, -1)).view(n * n, p, c)  # (n*n, P, C)
        products = torch.bmm(v, weights, out=scratch.band("products", (n * n, p, o), x))  # sum over channels
        half = torch.mm(a_t, products.view(n, -1), out=scratch.band("half_out", (m, n * p * o), x))
        y = torch.bmm(a_t.expand(m, m, n), half.view(m, n, p * o), out=scratch.band("y", (m, m, p * o), x))
        out[r : r + t_h] = y.view(m, m, t_h, tiles_w, o).permute(2, 0, 3, 1, 4)
    return out.view(tiles_h * m, tiles_w * m, -1)[:h_out, :w_out]
