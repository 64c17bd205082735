"""The networks' linear layers, attention and convolutions on oneDNN's CPU kernels.

On x86-64, torch runs a float32 ``nn.Linear`` (and the matrix products inside
``nn.MultiheadAttention``) through MKL's sgemm, which on AMD processors takes its AVX2
path even where the CPU has AVX-512: a 2688x512 by 512x2048 product ran at 95 GFLOP/s
on the 2-core EPYC, and at 458 GFLOP/s through oneDNN, which picks its kernels by the CPU's
features rather than its vendor. Convolutions already go to oneDNN, except those torch
judges too small for it (they take ``_slow_conv2d_forward``, im2col and sgemm again).

:func:`use_onednn` swaps, in place, every ``nn.Linear``, ``nn.MultiheadAttention``,
``nn.Conv1d`` and ``nn.Conv2d`` of a network for a module that holds the same parameters
under the same names (its ``state_dict`` is unchanged) and calls oneDNN's fp32 kernels
(``torch.ops.mkldnn``, the ops torch's own compiler emits on the CPU). The arithmetic is
the same float32 arithmetic summed in another order: outputs differ from torch's kernels
by float rounding (an HT Demucs segment by 4e-7). Anything the kernels do not cover (other
dtypes or devices, masks, attention weights asked for, autograd) runs the original module.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: Machines where the swap pays: oneDNN's x86 kernels. Elsewhere (Apple silicon, Arm)
#: torch's own BLAS choice is kept.
_MACHINES = ("x86_64", "amd64")


def unavailable(machine: str | None = None) -> str | None:
    """Why this torch and machine (``platform.machine()`` unless given) cannot run the
    oneDNN kernels, or None when they can."""
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in _MACHINES:
        return f"oneDNN's kernels are used on x86-64 only, not {machine}"
    if not torch.backends.mkldnn.is_available():
        return f"torch {torch.__version__} was built without oneDNN"
    try:
        torch.ops.mkldnn._linear_pointwise  # noqa: B018 (looked up: missing in some builds)
        torch.ops.mkldnn._convolution_pointwise  # noqa: B018
    except (AttributeError, RuntimeError):
        return f"torch {torch.__version__} has no oneDNN pointwise ops"
    return None


def use_onednn(network: nn.Module, *, skip: tuple[type[nn.Module], ...] = ()) -> int:
    """Swap the network's linear, attention and convolution layers for oneDNN ones.

    Args:
        network: Changed in place (already swapped layers stay as they are).
        skip: Module types left alone with everything inside them (compiled cores,
            which an exporter must trace through plain torch ops).

    Returns:
        How many layers were swapped (0 where :func:`unavailable` says why).
    """
    if unavailable() is not None or isinstance(network, skip):
        return 0
    return _swap(network, skip)


def _swap(parent: nn.Module, skip: tuple[type[nn.Module], ...]) -> int:
    swapped = 0
    for name, child in list(parent.named_children()):
        if isinstance(child, (*skip, *_SWAPPED)):
            continue
        replacement = _replacement(child)
        if replacement is None:
            swapped += _swap(child, skip)
        else:
            setattr(parent, name, replacement)
            swapped += 1
    return swapped


def _replacement(module: nn.Module) -> nn.Module | None:
    kind = type(module)
    if kind is nn.Linear:
        return OneDnnLinear(module)  # type: ignore[arg-type]
    if kind is nn.MultiheadAttention and OneDnnAttention.covers(module):  # type: ignore[arg-type]
        return OneDnnAttention(module)  # type: ignore[arg-type]
    if kind in (nn.Conv1d, nn.Conv2d) and OneDnnConv.covers(module):  # type: ignore[arg-type]
        return OneDnnConv(module)  # type: ignore[arg-type]
    return None


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` on oneDNN (``x`` of any leading shape)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _fits(x: Tensor) -> bool:
    """Whether oneDNN's fp32 kernels take this input (the rest runs the original layer)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


class OneDnnLinear(nn.Module):
    """``nn.Linear`` on oneDNN: the same ``weight`` and ``bias``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        if not _fits(x):
            return F.linear(x, self.weight, self.bias)
        return _linear(x.contiguous(), self.weight, self.bias)


class OneDnnConv(nn.Module):
    """``nn.Conv1d`` or ``nn.Conv2d`` with zero padding given in samples, on oneDNN (a 1-D
    convolution as a 2-D one of height 1)."""

    _original: nn.Conv1d | nn.Conv2d

    def __init__(self, conv: nn.Conv1d | nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self._dims = 1 if isinstance(conv, nn.Conv1d) else 2
        pad = (0,) * (2 - self._dims)
        one = (1,) * (2 - self._dims)
        self._padding = [*pad, *conv.padding]
        self._stride = [*one, *conv.stride]
        self._dilation = [*one, *conv.dilation]
        self._groups = conv.groups
        object.__setattr__(self, "_original", conv)  # not a submodule: its parameters are ours

    @staticmethod
    def covers(conv: nn.Conv1d | nn.Conv2d) -> bool:
        """Zero padding by sizes (not ``"same"``), the only kind the kernel takes."""
        return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)

    def forward(self, x: Tensor) -> Tensor:
        if not _fits(x) or x.dim() != self._dims + 2:
            return self._original(x)
        weight = self.weight if self._dims == 2 else self.weight.unsqueeze(-2)
        image = x if self._dims == 2 else x.unsqueeze(-2)
        out = torch.ops.mkldnn._convolution_pointwise(
            image.contiguous(),
            weight,
            self.bias,
            self._padding,
            self._stride,
            self._dilation,
            self._groups,
            "none",
            [],
            "",
        )
        return out if self._dims == 2 else out.squeeze(-2)


#: The most attention scores held at once (4 MiB of float32), so that a block of queries'
#: scores stay in the CPU's cache from the product that makes them, through the softmax,
#: to the product that weights the values. One head of HT Demucs' frequency branch has
#: 2688 x 2688 scores (29 MB): in blocks, the network's attention took 5 % less time
#: (534 ms against 563 ms a segment on the 2-core EPYC), with the same result to the
#: bit (each query's row is computed alike).
SCORES_HELD = 1 << 20


def query_block(keys: int) -> int:
    """How many queries' scores against ``keys`` keys are computed at once."""
    return max(1, SCORES_HELD // keys)


class OneDnnAttention(nn.Module):
    """``nn.MultiheadAttention`` on oneDNN: its projections, and for each head and block
    of queries (:func:`query_block`) the scores and their weighting of the values as two
    matrix products around a softmax.

    It keeps the module's parameters under their names (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``); calls with masks, asking for the attention weights,
    or with inputs the kernels do not take run the original module.
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.in_proj_weight = attention.in_proj_weight
        self.in_proj_bias = attention.in_proj_bias
        self.out_proj = attention.out_proj
        # What torch's own layers read of their attention (nn.TransformerEncoderLayer's
        # fast-path checks), under the same names.
        self.batch_first = attention.batch_first
        self.num_heads = attention.num_heads
        self.embed_dim = attention.embed_dim
        self.dropout = attention.dropout
        self._qkv_same_embed_dim = True
        object.__setattr__(self, "_original", attention)

    @staticmethod
    def covers(attention: nn.MultiheadAttention) -> bool:
        """One packed input projection with biases, no extra key/value biases."""
        return (
            attention._qkv_same_embed_dim
            and attention.in_proj_bias is not None
            and attention.bias_k is None
            and not attention.add_zero_attn
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        original: Any = self._original
        if (
            need_weights
            or attn_mask is not None
            or key_padding_mask is not None
            or is_causal
            or query.dim() != 3
            or not all(_fits(t) for t in (query, key, value))
            or (original.training and original.dropout > 0)
        ):
            return original(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        width, heads = self.embed_dim, self.num_heads
        weight, bias = self.in_proj_weight, self.in_proj_bias
        assert bias is not None  # covers() took only modules with biases
        q_in = query.contiguous()
        k_in = q_in if key is query else key.contiguous()
        v_in = k_in if value is key else value.contiguous()
        if k_in is q_in:
            q, k = _linear(q_in, weight[: 2 * width], bias[: 2 * width]).split(width, dim=-1)
        else:
            q = _linear(q_in, weight[:width], bias[:width])
            k = _linear(k_in, weight[width : 2 * width], bias[width : 2 * width])
        batch, length, _ = q.shape
        size = width // heads
        # (batch, heads, tokens, size) laid out once, so each head's slices are contiguous;
        # the scale goes into the queries as torch's attention applies it.
        q = (q.reshape(batch, length, heads, size).transpose(1, 2) * size**-0.5).contiguous()
        k = k.reshape(batch, -1, heads, size).transpose(1, 2).contiguous()
        # The values projected already transposed, (channels, tokens) per item, so each
        # head's rows are the contiguous weight its product takes: no transposing copy.
        v_weight, v_bias = weight[2 * width :], bias[2 * width :]
        v_t = q.new_empty(batch, width, v_in.shape[1])
        for b in range(batch):
            torch.add(_linear(v_weight, v_in[b], None), v_bias[:, None], out=v_t[b])
        v_t = v_t.view(batch, heads, size, -1)
        # Written straight into the (batch, tokens, heads, size) order the output
        # projection reads, so the heads need no merging copy.
        out = q.new_empty(batch, length, heads, size)
        rows = query_block(k.shape[2])
        for b in range(batch):
            for h in range(heads):
                keys, values = k[b, h], v_t[b, h]
                for start in range(0, length, rows):
                    block = q[b, h, start : start + rows]
                    scores = torch.softmax(_linear(block, keys, None), dim=-1)
                    out[b, start : start + rows, h] = _linear(scores, values, None)
        merged = out.reshape(batch, length, width)
        result = _linear(merged, self.out_proj.weight, self.out_proj.bias)
        return (result if self.batch_first else result.transpose(0, 1)), None


_SWAPPED = (OneDnnLinear, OneDnnConv, OneDnnAttention)
