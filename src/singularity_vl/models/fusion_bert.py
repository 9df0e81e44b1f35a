"""BERT with text-only and cross-attending (fusion) layers, written here on SDPA.

Module and parameter names follow the release's `xbert` (ALBEF) so its checkpoints load by name:
`embeddings.*`, `encoder.layer.N.{attention,crossattention}.{self,output}.*`, `intermediate`, `output`.
transformers 5 only allows cross-attention in causal decoders, hence this file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from singularity_vl.models.config import TextConfig

Mode = Literal["text", "fusion", "multi_modal"]

# The release adds -10000 (not -inf) to masked attention scores; kept so scores match bit for bit.
MASK_VALUE = -10000.0


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation (Hugging Face `_init_weights`), which the release's text encoder, its fresh
    cross-attention and the MLM head get: Linear/Embedding N(0, 0.02), zero biases, LayerNorm 1/0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def padding_bias(mask: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """[B, Lk] 0/1 mask -> additive bias [B, 1, 1, Lk] (0 keep, -10000 drop); None stays None."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * MASK_VALUE


def causal_padding_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decoder self-attention bias [B, 1, L, L]: causal AND padding, as the release's BertLMHeadModel."""
    length = mask.shape[1]
    causal = torch.ones(length, length, device=mask.device).tril()
    keep = causal[None, None] * mask[:, None, None, :].to(causal.dtype)  # (B, 1, L, L)
    return (1.0 - keep.to(dtype)) * MASK_VALUE


class BertEmbeddings(nn.Module):
    """Word + absolute position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        position_ids = self.position_ids[:, :length]
        embeds = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        embeds = embeds + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeds))


@dataclass
class KVSegments:
    """Cross-attention keys/values for consecutive blocks of query rows: part j, `(k, v, rows)`, serves the
    next `rows` query rows, each of its K/V rows serving `rows // len(k)` consecutive ones. Lets ITM pair
    one video with several texts without copying its keys/values (or their gradients) per pair."""

    parts: list[tuple[torch.Tensor, torch.Tensor, int]]


KV = tuple[torch.Tensor, torch.Tensor] | KVSegments


class BertSelfAttention(nn.Module):
    """Multi-head attention; keys/values come from `kv_states` (cross-attention) or the queries' input."""

    def __init__(self, cfg: TextConfig, kv_width: int, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout
        self.attn_implementation = attn_implementation

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, N, hd)

    def project_kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, nh, N, hd) of `states`; cacheable per video for re-ranking."""
        return self._heads(self.key(states)), self._heads(self.value(states))

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None = None,
        kv_states: torch.Tensor | None = None,
        kv: KV | None = None,
    ) -> torch.Tensor:
        q = self._heads(self.query(hidden_states))
        p = self.dropout_p if self.training else 0.0
        if isinstance(kv, KVSegments):
            if bias is not None or sum(rows for _, _, rows in kv.parts) != q.shape[0]:
                raise ValueError("KVSegments: no attention bias, and the parts' rows must add up to the queries")
            outs, start = [], 0
            for k, v, rows in kv.parts:
                outs.append(self._attend_grouped(q[start : start + rows], k, v, p))
                start += rows
            out = torch.cat(outs)
        else:
            if kv is None:
                kv = self.project_kv(hidden_states if kv_states is None else kv_states)
            out = self._attend_grouped(q, *kv, p, bias)
        b, _, n, _ = out.shape
        return out.transpose(1, 2).reshape(b, n, -1)  # (B, Lq, H)

    def _attend_grouped(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention (M, nh, Lq, hd); with fewer K/V rows than queries (and no bias), each K/V row serves
        M // rows consecutive query rows (as `repeat_interleave` would): queries do not interact in
        cross-attention, so each group becomes one long query sequence against its keys (no copy of K/V)."""
        m, heads, lq, hd = q.shape
        kb = k.shape[0]
        if kb < m and m % kb == 0 and bias is None:
            g = m // kb
            q = q.view(kb, g, heads, lq, hd).transpose(1, 2).reshape(kb, heads, g * lq, hd)
            out = self._attend(q, k, v, None, p)  # (kb, nh, g*Lq, hd)
            return out.view(kb, heads, g, lq, hd).transpose(1, 2).reshape(m, heads, lq, hd)
        return self._attend(q, k, v, bias, p)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, p: float
    ) -> torch.Tensor:
        if bias is not None:
            bias = bias.to(q.dtype)
        if self.attn_implementation == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, nh, Lq, Lk)
            if bias is not None:
                scores = scores + bias
            probs = F.dropout(scores.softmax(-1), p=p, training=self.training)
            out = probs @ v
        return out


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertAttention(nn.Module):
    """Attention block with post-LayerNorm residual (BERT style)."""

    def __init__(self, cfg: TextConfig, kv_width: int, attn_implementation: str) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width, attn_implementation)
        self.output = BertSelfOutput(cfg)

    def forward(self, hidden_states, bias=None, kv_states=None, kv=None) -> torch.Tensor:
        return self.output(self.self(hidden_states, bias, kv_states, kv), hidden_states)

    def first_token(self, hidden_states: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention output of the first position only (B, 1, H): its query against every key."""
        first = hidden_states[:, :1]
        if bias is not None:
            bias = bias[..., :1, :]
        return self.output(self.self(first, bias, kv_states=hidden_states), first)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertLayer(nn.Module):
    """Self-attention -> (cross-attention to the video) -> FFN."""

    def __init__(
        self, cfg: TextConfig, cross_attention: bool, encoder_width: int, attn_implementation: str = "sdpa"
    ) -> None:
        super().__init__()
        self.attention = BertAttention(cfg, cfg.hidden_size, attn_implementation)
        self.has_cross_attention = cross_attention
        if cross_attention:
            self.crossattention = BertAttention(cfg, encoder_width, attn_implementation)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_bias: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
        cross_kv: KV | None = None,
        first_only: bool = False,
        self_attended: bool = False,
    ) -> torch.Tensor:
        """(B, L, H); with `first_only`, (B, 1, H): the first position ([CLS]) alone, the same numbers
        as the full layer's first row (no other position reads it within the layer). `self_attended`:
        `hidden_states` already are this layer's self-attention output (`FusionBert.first_self_attention`)."""
        if self_attended:
            hidden_states = hidden_states[:, :1] if first_only else hidden_states
        elif first_only:
            hidden_states = self.attention.first_token(hidden_states, self_bias)
        else:
            hidden_states = self.attention(hidden_states, self_bias)
        if self.has_cross_attention:
            if encoder_hidden_states is None and cross_kv is None:
                raise ValueError("a fusion layer needs encoder_hidden_states (the video tokens)")
            hidden_states = self.crossattention(hidden_states, cross_bias, encoder_hidden_states, cross_kv)
        return self.output(self.intermediate(hidden_states), hidden_states)


class BertEncoder(nn.Module):
    """A stack of BertLayer; layers from `fusion_layer` on cross-attend."""

    def __init__(
        self,
        cfg: TextConfig,
        num_layers: int,
        fusion_layer: int,
        encoder_width: int,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(cfg, i >= fusion_layer, encoder_width, attn_implementation) for i in range(num_layers)
        )
        self.gradient_checkpointing = False

    def run(
        self,
        hidden_states: torch.Tensor,
        start: int,
        stop: int,
        self_bias: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
        cross_kvs: list[KV] | None = None,
        cls_only: bool = False,
        self_attended: bool = False,
    ) -> torch.Tensor:
        for i in range(start, stop):
            layer = self.layer[i]
            kv = cross_kvs[i - start] if cross_kvs is not None else None
            flags = (cls_only and i == stop - 1, self_attended and i == start)  # first_only, self_attended
            args = (hidden_states, self_bias, encoder_hidden_states, cross_bias, kv, *flags)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states = checkpoint(layer, *args, use_reentrant=False)
            else:
                hidden_states = layer(*args)
        return hidden_states


class FusionBert(nn.Module):
    """The release's text encoder: `mode="text"` runs layers [0, fusion_layer), `"fusion"` the rest on
    given hidden states, `"multi_modal"` all of them. With `causal=True` it is the QA answer decoder."""

    def __init__(
        self,
        cfg: TextConfig,
        encoder_width: int,
        num_layers: int | None = None,
        fusion_layer: int | None = None,
        causal: bool = False,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers if num_layers is None else num_layers
        self.fusion_layer = cfg.fusion_layer if fusion_layer is None else fusion_layer
        self.causal = causal
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg, self.num_layers, self.fusion_layer, encoder_width, attn_implementation)
        self.apply(init_bert_weights)

    def layer_range(self, mode: Mode) -> tuple[int, int]:
        if mode == "text":
            return 0, self.fusion_layer
        if mode == "fusion":
            return self.fusion_layer, self.num_layers
        if mode == "multi_modal":
            return 0, self.num_layers
        raise ValueError(f"mode must be text, fusion or multi_modal, got {mode!r}")

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: Mode = "multi_modal",
        cross_kvs: list[KV] | None = None,
        cls_only: bool = False,
        self_attended: bool = False,
    ) -> torch.Tensor:
        """Last hidden state (B, L, H). Give `input_ids` (embedded here) or `hidden_states` (e.g. the
        text-mode output, for `mode="fusion"`). A missing `attention_mask` means no padding. `cls_only`:
        the last layer computes the first position alone, (B, 1, H), enough for ITM (which reads [CLS]).
        `self_attended`: `hidden_states` come from `first_self_attention` (its layer's self-attention is
        skipped)."""
        start, stop = self.layer_range(mode)
        if hidden_states is None:
            if input_ids is None:
                raise ValueError("give input_ids or hidden_states")
            hidden_states = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device, dtype=torch.long)
        self_bias = self._self_bias(attention_mask)
        cross_bias = None
        if encoder_attention_mask is not None and not bool(encoder_attention_mask.all()):
            cross_bias = padding_bias(encoder_attention_mask)
        return self.encoder.run(
            hidden_states, start, stop, self_bias, encoder_hidden_states, cross_bias, cross_kvs, cls_only, self_attended
        )

    def _self_bias(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        if self.causal:
            return causal_padding_bias(attention_mask)
        if bool(attention_mask.all()):
            return None  # no padding: lets SDPA take its unmasked kernel, same result
        return padding_bias(attention_mask)

    def first_self_attention(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, mode: Mode = "fusion"
    ) -> torch.Tensor:
        """The self-attention block of the first layer of `mode` (B, L, H). In the first fusion layer it
        reads the text alone, so re-ranking computes it once per text, not once per (text, video) pair;
        pass the result with `self_attended=True`."""
        start, _ = self.layer_range(mode)
        return self.encoder.layer[start].attention(hidden_states, self._self_bias(attention_mask))


class BertPredictionTransform(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMHead(nn.Module):
    """MLM / LM head: dense, GELU, LayerNorm, then a decoder whose weight is tied to the word embeddings."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.transform = BertPredictionTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.apply(init_bert_weights)

    def tie_to(self, embeddings: BertEmbeddings) -> None:
        self.decoder.weight = embeddings.word_embeddings.weight

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class TemporalEncoder(nn.Module):
    """Self-attention-only BERT layers run across the frames at each token position (no mask).
    Left at PyTorch's default initialisation: the release's N(0, 0.02) init of it is a no-op."""

    def __init__(self, cfg: TextConfig, num_layers: int, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(cfg, False, cfg.hidden_size, attn_implementation) for _ in range(num_layers)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states)
        return hidden_states
