"""FLOP counting that sees every op of a DiT step, and the LLaMA reference stack, for bench_dit.py.

``torch.utils.flop_counter`` has no formula for the CPU flash-attention ops
(``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), so a CPU run counted zero
attention FLOPs; and its ``convolution_backward`` formula ignores ``groups`` for the weight gradient
(a depthwise conv's weight gradient is counted C times too large). ``count_flops`` adds both.

It also has no formula for in-place ``addmm_`` nor for ``mv``, which the DiT block's fused functions use
(the SwiGLU backward accumulates its input gradient with ``mm(...).addmm_(...)``, the norms' backward
takes matrix-vector products). ``count_flops`` counts them as ``addmm`` (2 m n k) and 2 m n, so a
computation counts the same whichever of these ops it is written with. In the bench the SwiGLU GEMMs are
counted either way: the counter's module tracker installs global forward hooks, under which the block runs
its projection as the plain module (``blocks._plain_linear``), the same FLOPs through ``mm``; the matrix-
vector products add 0.02 GFLOP to the realistic step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, addmm_flop, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _cpu_sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _addmm_inplace(self: Any, a: Any, b: Any, *args: Any, **kwargs: Any) -> int:
    return addmm_flop(self, a, b)


def _mv(matrix: Any, vector: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * matrix[0] * matrix[1]


def _addmv(self: Any, matrix: Any, vector: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * matrix[0] * matrix[1]


def _conv_flops(batch: int, out_positions: int, kernel: int, c_out: int, c_in_per_group: int) -> int:
    return 2 * batch * out_positions * kernel * c_out * c_in_per_group


def _conv_backward(
    grad_out: Any,
    x: Any,
    w: Any,
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    groups: int,
    output_mask: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """Input and weight gradients of a (grouped) non-transposed conv: each costs what the forward does."""
    if transposed:
        raise NotImplementedError("bench_dit counts non-transposed convolutions only")
    kernel = 1
    for size in w[2:]:
        kernel *= size
    positions = 1
    for size in grad_out[2:]:
        positions *= size
    forward = _conv_flops(x[0], positions, kernel, w[0], w[1])  # w[1] is already C_in / groups
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


CUSTOM: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
    aten.convolution_backward: _conv_backward,
    aten.addmm_: _addmm_inplace,
    aten.mv: _mv,
    aten.addmv: _addmv,
    aten.addmv_: _addmv,
}


def count_flops(fn: Callable[[], Any]) -> tuple[int, int]:
    """(total FLOPs, attention FLOPs) of one call of ``fn``, attention and grouped convs included."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM) as counter:
        fn()
    attention = sum(
        n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" in str(op)
    )
    return counter.get_total_flops(), attention


class LlamaStack(torch.nn.Module):
    """``depth`` transformers ``LlamaDecoderLayer`` blocks (DiffRhythm's DiT block) with LLaMA's RoPE."""

    def __init__(self, hidden: int, heads: int, intermediate: int, depth: int) -> None:
        super().__init__()
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        config = LlamaConfig(
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=intermediate,
            num_hidden_layers=depth,
            attn_implementation="sdpa",
        )
        self.layers = torch.nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(depth))
        self.rotary = LlamaRotaryEmbedding(config)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Bidirectional, as a diffusion DiT attends (DiffRhythm passes a key mask): without a mask and
        without ``is_causal=False`` transformers runs causal attention, which skips half the attention
        work that the FLOP counter still counts in full."""
        positions = torch.arange(h.shape[1], device=h.device)[None]
        rope = self.rotary(h, positions)
        for layer in self.layers:
            out = layer(
                h, attention_mask=None, position_ids=positions, position_embeddings=rope, is_causal=False
            )
            h = out[0] if isinstance(out, tuple) else out  # transformers 5 returns the tensor alone
        return h


def llama_step(stack: LlamaStack, batch: int, tokens: int, hidden: int) -> Callable[[], None]:
    """One forward + backward of the stack on a fixed random input (the reference's share of A B A B)."""
    x = torch.randn(batch, tokens, hidden, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        stack(x).square().mean().backward()
        stack.zero_grad(set_to_none=True)

    return step
