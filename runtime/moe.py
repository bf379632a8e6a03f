"""Mixture-of-experts feed-forward layer and the transformer block that uses it.

Routing is ``soft`` (every expert, weighted by the router's softmax) or ``top_k`` (each token
goes to its k best experts; with k > 1 their weights are renormalised to sum to 1, with k = 1
the raw probability is kept so the router still gets a gradient through the output, as in the
Switch Transformer). The router reads each token (``route_by: token``) or the task embedding
(``route_by: task``: every token of a task takes the same experts, so tasks can specialise).

The load-balancing loss (Switch Transformer: ``E * sum_e f_e * P_e``, f = share of routed
tokens, P = mean router probability) is accumulated over every call of one model forward (a
batch's tasks) and read once with :meth:`MoEFeedForward.aux_loss`, which also clears it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class MoEFeedForward(nn.Module):
    """``[..., d_model] -> [..., d_model]`` through ``num_experts`` two-layer MLPs.

    Args:
        d_model: feature size.
        num_experts: number of experts.
        hidden: each expert's hidden size (default ``2 * d_model``).
        top_k: route each token to its k best experts; None routes softly to all.
        route_by: ``token`` (router on the features) or ``task`` (router on the task vector).
        embedding_dim: task-vector size for ``route_by: task`` (filled in by the trunk).
        aux_loss_weight: factor of the load-balancing loss in the training loss.
    """

    task_conditioned = True

    def __init__(
        self,
        d_model: int,
        num_experts: int = 4,
        hidden: int | None = None,
        top_k: int | None = None,
        route_by: Literal["token", "task"] = "token",
        embedding_dim: int | None = None,
        aux_loss_weight: float = 0.01,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"MoE num_experts must be >= 1, got {num_experts}")
        if top_k is not None and not 1 <= top_k <= num_experts:
            raise ValueError(f"MoE top_k must be in 1..num_experts ({num_experts}), got {top_k}")
        self.num_experts, self.top_k, self.route_by = num_experts, top_k, route_by
        self.aux_loss_weight = aux_loss_weight
        hidden = hidden or 2 * d_model
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d_model, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, d_model),
            )
            for _ in range(num_experts)
        )
        self.router: nn.Module | None = None
        if route_by == "token":
            self.router = nn.Linear(d_model, num_experts)
        elif embedding_dim is not None:
            self.bind_embedding(embedding_dim)
        self._stats: list[tuple[Tensor, Tensor, int]] = []
        #: the last forward's gates ``[tokens, num_experts]`` (for inspection and tests)
        self.last_gates: Tensor | None = None

    def bind_embedding(self, embedding_dim: int) -> None:
        """Build the task router once the task-vector size is known."""
        if self.route_by == "task" and self.router is None:
            self.router = nn.Linear(embedding_dim, self.num_experts)

    def gates(self, tokens: Tensor, task_embedding: Tensor | None) -> tuple[Tensor, Tensor]:
        """(routing weights ``[N, E]``, router probabilities ``[N, E]``) for ``N`` tokens."""
        if self.router is None:
            raise RuntimeError(
                "MoE routed by task has no router: it needs a task embedding "
                "(put it in a TaskTrunk of a model with a task_embedding)"
            )
        if self.route_by == "task":
            if task_embedding is None:
                raise ValueError("MoE with route_by: task needs the task embedding")
            logits = self.router(task_embedding).expand(tokens.shape[0], -1)
        else:
            logits = self.router(tokens)
        probs = logits.softmax(dim=-1)
        if self.top_k is None:
            return probs, probs
        top, index = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            top = top / top.sum(dim=-1, keepdim=True)
        return torch.zeros_like(probs).scatter(-1, index, top), probs

    def forward(self, x: Tensor, task_embedding: Tensor | None = None) -> Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        gates, probs = self.gates(tokens, task_embedding)
        self.last_gates = gates.detach()
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows = (gates[:, e] > 0).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            weight = gates.index_select(0, rows)[:, e : e + 1]
            out = out.index_add(0, rows, weight * expert(tokens.index_select(0, rows)))
        routed = (gates > 0).float()
        self._stats.append((routed.sum(0), probs.sum(0), tokens.shape[0]))
        return out.reshape(x.shape)

    def aux_loss(self) -> Tensor | None:
        """Weighted load-balancing loss over the calls since the last read; clears them."""
        if not self._stats:
            return None
        routed = torch.stack([s[0] for s in self._stats]).sum(0)
        probs = torch.stack([s[1] for s in self._stats]).sum(0)
        count = sum(s[2] for s in self._stats)
        self._stats = []
        share = routed / routed.sum().clamp_min(1.0)
        mean_prob = probs / max(count, 1.0)
        return self.aux_loss_weight * self.num_experts * (share * mean_prob).sum()

    def clear_aux(self) -> None:
        self._stats = []


class MoETransformerBlock(nn.Module):
    """Pre-norm transformer block whose feed-forward part is a :class:`MoEFeedForward`.

    Takes ``[B, T, d_model]`` sequences or ``[B, d_model]`` features (one token).
    """

    task_conditioned = True

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        num_experts: int = 4,
        expert_hidden: int | None = None,
        top_k: int | None = None,
        route_by: Literal["token", "task"] = "token",
        aux_loss_weight: float = 0.01,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.moe = MoEFeedForward(
            d_model,
            num_experts,
            expert_hidden,
            top_k,
            route_by,
            aux_loss_weight=aux_loss_weight,
            dropout=dropout,
        )
        self.dropout = nn.Dropout(dropout)

    def bind_embedding(self, embedding_dim: int) -> None:
        self.moe.bind_embedding(embedding_dim)

    def forward(self, x: Tensor, task_embedding: Tensor | None = None) -> Tensor:
        single = x.dim() == 2
        if single:
            x = x.unsqueeze(1)
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, h, need_weights=False)[0])
        x = x + self.dropout(self.moe(self.norm2(x), task_embedding))
        return x.squeeze(1) if single else x
