"""Cross Scan: the report's four reading directions of a feature map, as one batch of sequences."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from facescan.models.pos_embed import sincos_pos_embed_2d

#: The directions, in output order: the map, its flip over H and W, its transpose, and the transpose
#: of the flipped map (the report's ``cross_scan``).
DIRECTIONS = ("identity", "flip_hw", "transpose", "flip_hw_transpose")


def cross_scan(x: Tensor, embed: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The four direction maps of ``x``, each optionally embedded, read row-major as one batch.

    The report flips/transposes the map first and patch-embeds each direction with the same
    convolution; passing that convolution as ``embed`` does exactly that in two calls (the two
    H x W maps, then the two W x H ones) with no loop over directions or samples, and stays correct
    when H != W (transposed maps are never stacked with untransposed ones).

    Args:
        x: ``(B, C, H, W)`` feature map.
        embed: applied to the ``(2B, C, H, W)`` and ``(2B, C, W, H)`` direction maps, e.g. a
            :class:`PatchEmbed`; identity when None.

    Returns:
        ``(B * 4, N, D)``, sample-major: row ``b * 4 + d`` is sample ``b`` read in direction
        ``DIRECTIONS[d]``.
    """
    b = x.shape[0]
    rows = torch.cat([x, x.flip(2, 3)])  # directions 0, 1: (2B, C, H, W)
    cols = rows.transpose(2, 3)  # directions 2, 3 are their transposes: (2B, C, W, H)
    if embed is not None:
        rows, cols = embed(rows), embed(cols)
    # Row-major reading (2B, D, h, w) -> (2B, N, D) is a view; regroup to (B, flip, N, D).
    rows_seq = rows.flatten(2).transpose(1, 2).unflatten(0, (2, b)).transpose(0, 1)
    cols_seq = cols.flatten(2).transpose(1, 2).unflatten(0, (2, b)).transpose(0, 1)
    # One copy into (B, transpose, flip, N, D); direction index = 2 * transpose + flip.
    seq = torch.stack([rows_seq, cols_seq], dim=1)
    return seq.flatten(0, 2)


def cross_scan_pos_embed(
    height: int,
    width: int,
    dim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-direction sin-cos positions for :func:`cross_scan` of an ``height x width`` token grid.

    Each direction is a map read row-major, so its positions are those of its own grid: ``H x W``
    for the first two directions, ``W x H`` for the transposed ones. Added by sequence index (as the
    report adds positions to the scanned sequences), so a pixel gets a different position in each
    direction and the four sequences differ for the transformer.

    Returns:
        ``(4, height * width, dim)``.
    """
    hw = sincos_pos_embed_2d(height, width, dim, device=device, dtype=dtype)
    wh = sincos_pos_embed_2d(width, height, dim, device=device, dtype=dtype)
    return torch.stack([hw, hw, wh, wh])
