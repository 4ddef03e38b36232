"""Multi-head self-attention that trains fast on CPUs: plain matrix products where they win."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from facescan.models.dropout import dropout

#: Sequences up to this length are attended with two batched matmuls and a softmax on CPUs:
#: 2-3x faster than PyTorch's fused CPU kernel (flash attention) for 64-400 tokens in bf16
#: (benchmarks/README.md). Longer ones use the fused kernel, which needs no ``N x N`` weights.
UNFUSED_MAX_TOKENS = 512


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention(dim, heads, dropout, batch_first=True)`` used as self-attention.

    Same parameters, state dict and results. When called with one tensor as query, key and value
    on a CPU, without masks or returned weights, attention is computed as
    ``dropout(softmax(q k^T / sqrt(d))) v`` with matmuls if the sequence has at most
    :data:`UNFUSED_MAX_TOKENS` tokens, or if attention dropout is active (PyTorch's fused CPU
    kernel has no dropout and would fall back to a slower unfused path). Every other call,
    GPUs included, is ``nn.MultiheadAttention``'s; so is ``nn.TransformerEncoderLayer``'s fused
    inference fast path, which reads the weights directly.

    Args:
        dim: token width.
        heads: attention heads.
        dropout: dropout on the attention weights.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__(dim, heads, dropout=dropout, batch_first=True)

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor | None]:
        dropout_p = self.dropout if self.training else 0.0
        unfused = (
            query.device.type == "cpu"
            and query is key is value
            and key_padding_mask is None
            and attn_mask is None
            and not need_weights
            and not kwargs.get("is_causal")
            and (query.shape[1] <= UNFUSED_MAX_TOKENS or dropout_p > 0)
        )
        if not unfused:
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                **kwargs,
            )
        b, n, d = query.shape
        qkv = nn.functional.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = dropout(weights, dropout_p, self.training) @ v  # (B, heads, N, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d)), None
