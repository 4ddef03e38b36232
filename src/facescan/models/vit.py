"""Pre-norm Vision Transformer parts: encoder, and the three placements the variants use."""

from __future__ import annotations

from torch import Tensor, nn

from facescan.models.attention import SelfAttention
from facescan.models.cross_scan import cross_scan, cross_scan_pos_embed
from facescan.models.dropout import Dropout
from facescan.models.patch_embed import PatchEmbed
from facescan.models.pos_embed import sincos_pos_embed_2d


class ViTBlock(nn.TransformerEncoderLayer):
    """The authors' pre-norm ViT block: ``nn.TransformerEncoderLayer`` with GELU, batch first.

    Its self-attention and dropouts are facescan's :class:`SelfAttention` and :class:`Dropout`,
    which compute the same thing faster when training on a CPU (PyTorch's are kept on GPUs); the
    parameters and state dict are the layer's, and inference uses its fused fast path.

    Args:
        dim: token width.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout on the block outputs and in the MLP.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, dropout: float, attention_dropout: float
    ) -> None:
        super().__init__(
            dim,
            heads,
            dim_feedforward=round(dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.self_attn = SelfAttention(dim, heads, attention_dropout)
        self.dropout, self.dropout1, self.dropout2 = (Dropout(dropout) for _ in range(3))


class ViTEncoder(nn.Module):
    """``depth`` pre-norm transformer blocks and a final LayerNorm: ``(B, N, D) -> (B, N, D)``.

    The blocks are :class:`ViTBlock`; each is built separately so their initial weights differ
    (``nn.TransformerEncoder`` would deep-copy one block). Dropout on the attention weights has
    its own rate (see :class:`SelfAttention` for its cost on CPUs).

    Args:
        dim: token width.
        depth: number of blocks.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout on the block outputs and in the MLP.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(ViTBlock(dim, heads, mlp_ratio, dropout, attention_dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.blocks(x))


class ViT(nn.Module):
    """Feature map to encoded tokens: patch embedding, 2-D sin-cos positions, :class:`ViTEncoder`.

    ``(B, C, H, W) -> (B, N, D)`` with ``N = ceil(H/p) * ceil(W/p)``. Used after ASPP (``vit: tail``).

    Args:
        in_channels: channels of the input map.
        dim: token width.
        patch_size: patch side ``p`` of the embedding convolution.
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout on the block outputs and in the MLP.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        patch_size: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.encoder = ViTEncoder(dim, depth, heads, mlp_ratio, dropout, attention_dropout)

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch tokens with positions, ``(B, N, D)``, and their grid ``(h, w)``."""
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        # (B, D, h, w) -> (B, h*w, D): a view when x is channels_last
        tokens = x.flatten(2).transpose(1, 2)
        return tokens + sincos_pos_embed_2d(h, w, self.dim, device=x.device, dtype=x.dtype), (h, w)

    def forward(self, x: Tensor) -> Tensor:
        tokens, _ = self.embed(x)
        return self.encoder(tokens)


class MidViT(ViT):
    """A ViT between layer3 and layer4: ``(B, C, H, W) -> (B, D, H/p, W/p)``, a map again.

    With the authors' patch size 1 the embedding is a per-position linear projection (1024 -> 512)
    and layer4 is built for ``D`` input channels.
    """

    def forward(self, x: Tensor) -> Tensor:
        tokens, grid = self.embed(x)
        # (B, N, D) -> (B, D, h, w): a view with channels_last strides, no copy.
        return self.encoder(tokens).transpose(1, 2).unflatten(2, grid)


class CrossScanViT(ViT):
    """The report's improved ViT: Cross Scan, shared patch embedding and encoder for 4 directions.

    ``(B, C, H, W) -> (B, 4, N, D)``: the four direction maps (see :func:`cross_scan`) are
    patch-embedded by one convolution, given the sin-cos positions of their own grid and encoded as
    one ``(B*4, N, D)`` batch by a shared encoder (the authors concatenated them into one
    ``4N``-token sequence instead).
    """

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        h, w = self.patch_embed.grid_size(x.shape[-2], x.shape[-1])
        tokens = cross_scan(x, self.patch_embed).unflatten(0, (b, 4))  # (B, 4, N, D)
        tokens = tokens + cross_scan_pos_embed(h, w, self.dim, device=x.device, dtype=tokens.dtype)
        return self.encoder(tokens.flatten(0, 1)).unflatten(0, (b, 4))


class TokenMeanPool(nn.Module):
    """Mean over the token axis (second to last): ``(..., N, D) -> (..., D)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=-2)
