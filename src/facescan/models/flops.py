"""Parameter and forward-FLOP counts (torch.utils.flop_counter), attention included."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _sdpa_flops(
    query_shape: torch.Size,
    key_shape: torch.Size,
    value_shape: torch.Size,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of ``softmax(q k^T) v``: two batched matmuls, 2 FLOPs per multiply-add."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one that
# F.scaled_dot_product_attention dispatches to, which it would count as 0.
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_forward_flops(
    model: nn.Module, input_size: int | tuple[int, int], batch_size: int = 1
) -> int:
    """FLOPs of one inference forward pass of ``model`` on ``(batch_size, 3, H, W)`` images.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention;
    2 FLOPs per multiply-add; element-wise ops, norms and softmax are not counted). The model runs
    in eval mode with the ``nn.MultiheadAttention`` fused fast path off, whose single fused kernel
    the counter cannot see; its training mode and the fast-path setting are restored afterwards.
    Works on a model built on the ``meta`` device (no memory, no compute).

    Args:
        model: an image classifier taking ``(B, 3, H, W)``.
        input_size: ``S`` for ``S x S`` or ``(H, W)``.
        batch_size: images per forward.

    Returns:
        The total FLOP count.

    Raises:
        ValueError: for a non-positive size or batch size.
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(f"input_size must be a positive int or (H, W), got {input_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    images = torch.zeros(batch_size, 3, *size, device=device, dtype=dtype)

    was_training = model.training
    fast_path = torch.backends.mha.get_fastpath_enabled()
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            model(images)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
    return counter.get_total_flops()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
