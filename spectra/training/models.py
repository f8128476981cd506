"""LRA models: a pre-LN Transformer encoder with pluggable attention, and its two heads.

The setup of the Long Range Arena experiments of Skyformer (arXiv 2111.00035) and Spectraformer
(arXiv 2405.15310): token embedding + learned positions, pre-LN blocks
``x ← x + Drop(MHA(LN(x)))``, ``x ← x + Drop(FFN(LN(x)))``, a final LN, then mean pooling over
real tokens ``h = Σ_i m_i x_i / Σ_i m_i``. Classification: ``MLP(h)``; retrieval (dual encoder,
shared weights): ``MLP([a, b, a*b, a−b])``.

The attention inside each block is any module with the Spectra attention interface
``forward(q, k, v, mask=None, causal=False)`` on (B, H, L, d) tensors; it is made by a
``layer -> nn.Module`` factory (see :mod:`spectra.training.attention`), so this file never
names an attention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spectra.checks import positive_int

__all__ = [
    "POOLINGS",
    "DualEncoderClassifier",
    "FeedForward",
    "LRAEncoder",
    "MultiHeadAttention",
    "SequenceClassifier",
    "TransformerBlock",
    "masked_mean",
]

AttentionFactory = Callable[[int], nn.Module]
#: ``real_tokens``: Σ_i m_i x_i / Σ_i m_i (ours); ``padded_length``: Σ_i m_i x_i / L with L the
#: padded length (the Skyformer/Spectraformer code: ``(LN(x) * mask).mean(dim=1)``).
POOLINGS = ("real_tokens", "padded_length")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        positive_int(value, name)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, L, E) over real tokens (``mask`` (B, L) True): Σ_i m_i x_i / Σ_i m_i.

    Padding positions are excluded with ``where`` (not a product), so even a non-finite value at
    a padding position cannot leak into the result. An all-padding row gives zeros.
    """
    keep = mask[..., None]
    total = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(total.dtype)
    return total / count


class MultiHeadAttention(nn.Module):
    """Projections to H heads of size d, the pluggable attention, and the output projection.

    ``zero_padded_keys=True`` reproduces the Skyformer/Spectraformer Performer wrapper: keys and
    values of padding positions are multiplied by 0 and the attention gets no mask, so padded
    keys still enter the feature map's statistics and add φ(0) to the normalizer.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        attention: nn.Module,
        zero_padded_keys: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim)
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.attention = attention
        self.zero_padded_keys = bool(zero_padded_keys)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape
        return x.view(b, l, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, E), mask (B, L) bool (True = real token) → (B, L, E)."""
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        if self.zero_padded_keys and mask is not None:
            keep = mask[:, None, :, None].to(k.dtype)
            out = self.attention(q, k * keep, v * keep, mask=None)
        else:
            out = self.attention(q, k, v, mask=mask)
        b, _, l, _ = out.shape
        out = out.transpose(1, 2).reshape(b, l, self.num_heads * self.head_dim)
        return self.out_proj(out.to(x.dtype))


class FeedForward(nn.Sequential):
    """Linear(E, F) → GELU → Dropout → Linear(F, E)."""

    def __init__(self, embed_dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(embed_dim, ffn_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, embed_dim),
        )


class TransformerBlock(nn.Module):
    """Pre-LN block: x + Drop(MHA(LN(x))), then x + Drop(FFN(LN(x)))."""

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        head_dim: int,
        attention: nn.Module,
        dropout: float,
        zero_padded_keys: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadAttention(embed_dim, num_heads, head_dim, attention, zero_padded_keys)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = FeedForward(embed_dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class LRAEncoder(nn.Module):
    """Token + learned position embeddings, ``num_layers`` pre-LN blocks, final LN, mean pooling.

    ``attention_factory(layer)`` returns the attention module of layer ``layer``.
    ``forward(input_ids (B, L), mask (B, L)) -> (B, E)`` pools over real tokens only
    (``pooling="real_tokens"``) or sums real tokens and divides by the padded length
    (``"padded_length"``, the reference code's recipe); ``zero_padded_keys``: see
    :class:`MultiHeadAttention`.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        max_positions: int,
        embed_dim: int,
        ffn_dim: int,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        attention_factory: AttentionFactory,
        dropout: float = 0.1,
        pooling: str = "real_tokens",
        zero_padded_keys: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        _check_positive(
            vocab_size=vocab_size,
            max_positions=max_positions,
            embed_dim=embed_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
        )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.max_positions = max_positions
        self.embed_dim = embed_dim
        self.token_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_positions, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                embed_dim, ffn_dim, num_heads, head_dim, attention_factory(i), dropout,
                zero_padded_keys,
            )
            for i in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(embed_dim)

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token representations (B, L, E)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        if length > self.max_positions:
            raise ValueError(
                f"sequence length {length} exceeds the model's {self.max_positions} learned "
                "positions; raise model.max_positions or lower task.max_length"
            )
        if mask is not None and (mask.shape != input_ids.shape or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(input_ids.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        vocab = self.token_embedding.num_embeddings
        if input_ids.numel() and not torch.compiler.is_compiling():
            low, high = (int(v) for v in torch.aminmax(input_ids))
            if low < 0 or high >= vocab:  # else: an opaque IndexError / CUDA device assert
                raise ValueError(
                    f"token ids must be in [0, {vocab}) (this model's vocabulary; 0 = padding), "
                    f"got ids from {low} to {high}: the data does not match the task's "
                    "vocabulary (data of another task, or a different tokenization?)"
                )
        positions = torch.arange(length, device=input_ids.device)
        x = self.dropout(self.token_embedding(input_ids) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.encode(input_ids, mask)
        if mask is None:
            return x.mean(dim=1)
        if self.pooling == "padded_length":
            return masked_mean(x, mask) * (mask.sum(dim=1, keepdim=True) / mask.shape[1]).to(
                x.dtype
            )
        return masked_mean(x, mask)


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class SequenceClassifier(nn.Module):
    """Encoder + MLP head: logits = MLP(mean-pooled encoding) (LRA ListOps, Text)."""

    def __init__(self, encoder: LRAEncoder, num_classes: int, hidden_dim: int) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, hidden_dim=hidden_dim)
        self.encoder = encoder
        self.head = _mlp(encoder.embed_dim, hidden_dim, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``batch`` with ``input_ids`` and ``mask`` (B, L) → logits (B, C)."""
        return self.head(self.encoder(batch["input_ids"], batch.get("mask")))


class DualEncoderClassifier(nn.Module):
    """Dual encoder (shared weights) for LRA Retrieval: logits = MLP([a, b, a*b, a−b]).

    With the paper's E = 64: MLP 256 → 128 → 2 (Skyformer / Spectraformer LRA setup).
    """

    def __init__(self, encoder: LRAEncoder, num_classes: int, hidden_dim: int) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, hidden_dim=hidden_dim)
        self.encoder = encoder
        self.head = _mlp(4 * encoder.embed_dim, hidden_dim, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``batch`` with ``input_ids``/``mask`` and ``input_ids2``/``mask2`` → logits (B, C).

        Both sides go through the encoder in one call (stacked along the batch, padded to the
        longer side), so a training step is one forward of every attention layer — a
        random-feature layer's redraw counter then counts steps, and both sides see the same W.
        """
        ids1, ids2 = batch["input_ids"], batch["input_ids2"]
        mask1, mask2 = batch.get("mask"), batch.get("mask2")
        if mask1 is None:
            mask1 = torch.ones_like(ids1, dtype=torch.bool)
        if mask2 is None:
            mask2 = torch.ones_like(ids2, dtype=torch.bool)
        length = max(ids1.shape[1], ids2.shape[1])
        ids = torch.cat([_pad_to(ids1, length, 0), _pad_to(ids2, length, 0)])
        mask = torch.cat([_pad_to(mask1, length, False), _pad_to(mask2, length, False)])
        a, b = self.encoder(ids, mask).chunk(2, dim=0)
        return self.head(torch.cat([a, b, a * b, a - b], dim=-1))


def _pad_to(t: torch.Tensor, length: int, value: int | bool) -> torch.Tensor:
    """Right-pad (B, L) ``t`` with ``value`` to (B, length)."""
    if t.shape[1] == length:
        return t
    return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)
