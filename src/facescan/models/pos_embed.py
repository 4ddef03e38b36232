"""Fixed 2-D sin-cos position embeddings, generated for the grid at hand."""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_pos_embed_2d(
    height: int,
    width: int,
    dim: int,
    *,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """2-D sine-cosine position embeddings of an ``height x width`` grid read row-major.

    A quarter of the channels encodes the column with sines, a quarter with cosines, and the same
    for the row (MAE / "simple ViT" layout). Nothing is learned or random, so any input size works
    and the embedding is identical in every run, on every rank and after reloading a checkpoint.

    Args:
        height: grid rows.
        width: grid columns.
        dim: embedding width, a multiple of 4.
        temperature: the frequency base.
        device: where to build the tensor.
        dtype: the result's dtype (computed in float32).

    Returns:
        ``(height * width, dim)``; row ``i * width + j`` is position (i, j).

    Raises:
        ValueError: if ``dim`` is not a positive multiple of 4 or the grid is empty.
    """
    if dim <= 0 or dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim to be a multiple of 4, got {dim}")
    if height < 1 or width < 1:
        raise ValueError(f"sin-cos position embedding needs a non-empty grid, got {height}x{width}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (
        torch.arange(quarter, device=device, dtype=torch.float32) / quarter
    )
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    # Broadcast products, not einsum/outer: they are element-wise and stay out of FLOP counts.
    y = (rows[:, None] * omega[None, :]).repeat_interleave(width, dim=0)  # (H*W, dim/4)
    x = (cols[:, None] * omega[None, :]).repeat(height, 1)  # (H*W, dim/4)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)
