"""The SINGULARITY models: a shared video/text backbone, the retrieval (+MLM pre-training) model
and the QA model. Shapes: B batch, T frames, L tokens per frame, D vision width, H text width."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from singularity_vl.models import losses
from singularity_vl.models.config import SingularityConfig, TextConfig
from singularity_vl.models.fusion_bert import BertLMHead, FusionBert, KVSegments, TemporalEncoder
from singularity_vl.models.vision import build_vision_encoder, encode_frames

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class VideoEncoding:
    """Output of `encode_video`."""

    tokens: torch.Tensor  # (B, T*L, D) fusion inputs ("concat" early fusion), frame-major
    pooled: torch.Tensor  # (B, T, D) per-frame pooled features for ITC
    frame_tokens: torch.Tensor  # (B, T, L, D) per-frame tokens before temporal modules (late fusion)


@dataclass
class SingularityOutput:
    """Training forward output; `loss` is the weighted sum of the others."""

    loss: torch.Tensor
    loss_itc: torch.Tensor
    loss_itm: torch.Tensor
    loss_mlm: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None  # (3B, 2): positives, (text, neg video), (neg text, video)
    sim_v2t: torch.Tensor | None = None  # (B, B) with temperature


def interpolate_temporal_embed(embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(1, T0, 1, D) -> (1, T, 1, D): sliced when fewer frames come in, linearly interpolated when more."""
    if num_frames <= embed.shape[1]:
        return embed[:, :num_frames]
    x = embed.squeeze(2).permute(0, 2, 1)  # (1, D, T0)
    x = F.interpolate(x, num_frames, mode="linear")  # (1, D, T)
    return x.permute(0, 2, 1).unsqueeze(2)


def _with_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows [x0, x[index0], x1, x[index1], ...]: each row followed by the row `index` picks for it."""
    return torch.stack([x, x.index_select(0, index)], 1).flatten(0, 1)


def _temporal_text_config(config: SingularityConfig) -> TextConfig:
    """BERT-layer sizes of the temporal encoder: the vision width, text dropouts (as the release)."""
    v = config.vision
    return dataclasses.replace(
        config.text, hidden_size=v.hidden_size, num_heads=v.num_heads, intermediate_size=v.intermediate_size
    )


class SingularityBase(nn.Module):
    """Vision encoder (+ temporal modules) and the fusion text encoder."""

    def __init__(self, config: SingularityConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        v, t = config.vision, config.text
        impl = config.attn_implementation
        self.vision_encoder = build_vision_encoder(v, impl)
        self.vision_layernorm = nn.LayerNorm(v.hidden_size, eps=1e-12)
        self.temporal_embeddings = nn.Parameter(torch.zeros(1, config.temporal.num_frames, 1, v.hidden_size))
        if config.temporal.enable_encoder:
            self.temporal_vision_encoder = TemporalEncoder(
                _temporal_text_config(config), config.temporal.num_layers, impl
            )
        self.text_encoder = FusionBert(t, encoder_width=v.hidden_size, attn_implementation=impl)
        if config.gradient_checkpointing:
            self.set_gradient_checkpointing(True)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.text_encoder.encoder.gradient_checkpointing = enabled
        if enabled:
            self.vision_encoder.activation_checkpointing_enable()
        else:
            self.vision_encoder.activation_checkpointing_disable()

    def set_attn_implementation(self, impl: str) -> None:
        """Switch every attention module between `sdpa` and `eager` (same weights)."""
        self.config.attn_implementation = impl
        self.vision_encoder.set_attn_implementation(impl)
        for module in self.modules():
            if hasattr(module, "attn_implementation"):
                module.attn_implementation = impl

    @staticmethod
    def _as_video(video: torch.Tensor) -> torch.Tensor:
        if video.ndim == 4:  # (B, 3, H, W) image -> 1-frame video
            video = video[:, None]
        if video.ndim != 5:
            raise ValueError(f"video must be (B, T, 3, H, W) or (B, 3, H, W), got {tuple(video.shape)}")
        return video

    def encode_frames(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each frame on its own: tokens (B, T, L, D) after `vision_layernorm`, pooled (B, T, D)."""
        video = self._as_video(video)
        b, t = video.shape[:2]
        tokens, pooled = encode_frames(self.vision_encoder, video.flatten(0, 1), self.config.vision.backbone)
        tokens = self.vision_layernorm(tokens)
        return tokens.view(b, t, tokens.shape[1], -1), pooled.view(b, t, -1)

    def encode_video(self, video: torch.Tensor) -> VideoEncoding:
        """Frames -> fusion tokens (temporal embeddings / encoder applied) and per-frame pooled features."""
        frame_tokens, pooled = self.encode_frames(video)
        tokens = self._temporal_tokens(frame_tokens)
        b, t, n, d = tokens.shape
        temporal = self.config.temporal
        if temporal.update_pooler_embed and temporal.enable_encoder and t > 1:
            pooled = tokens[:, :, 0]  # each frame's CLS after the temporal encoder
        return VideoEncoding(tokens.reshape(b, t * n, d), pooled, frame_tokens)

    def fuse_frames(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """Per-frame tokens (B, T, L, D) -> concat fusion inputs (B, T*L, D): temporal embeddings and the
        temporal encoder applied (so cached frame tokens can be re-fused later, e.g. by search)."""
        b, t, n, d = frame_tokens.shape
        return self._temporal_tokens(frame_tokens).reshape(b, t * n, d)

    def _temporal_tokens(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        b, t, n, d = frame_tokens.shape
        tokens = frame_tokens
        if self.config.temporal.add_temporal_embed:
            tokens = tokens + interpolate_temporal_embed(self.temporal_embeddings, t)
        if self.config.temporal.enable_encoder and t > 1:
            x = tokens.permute(0, 2, 1, 3).reshape(b * n, t, d)  # (B*L, T, D): attend across frames
            x = self.temporal_vision_encoder(x)
            tokens = x.view(b, n, t, d).permute(0, 2, 1, 3)
        return tokens

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-only layers: tokens (B, L, H) and the CLS feature (B, H)."""
        tokens = self.text_encoder(input_ids, attention_mask, mode="text")
        return tokens, tokens[:, 0]

    # --- our own format -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.json` and `model.safetensors` (tied weights stored once) atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k not in self._tied_keys()}
        tmp_w = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp_w), metadata={"format": "pt", "library": "singularity-vl"})
        tmp_c = directory / (CONFIG_NAME + ".tmp")
        tmp_c.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        tmp_w.replace(directory / WEIGHTS_NAME)
        tmp_c.replace(directory / CONFIG_NAME)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device | None = "cpu",
        map_location: str | torch.device | None = None,
        **overrides,
    ) -> SingularityBase:
        """Load a directory written by `save_pretrained` (any task; the class comes from `config.task`),
        built directly on `device` (`None`/"auto": a GPU when there is one; `map_location` is an alias)."""
        from singularity_vl.devices import resolve_device

        device = resolve_device(map_location if map_location is not None else device)
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{directory}: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
        config = SingularityConfig.load(directory / CONFIG_NAME)
        for key, value in overrides.items():
            setattr(config, key, value)
        model = create_empty_model(config, device)
        if cls is not SingularityBase and not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {config.task!r} model, not a {cls.__name__}")
        state = load_file(str(directory / WEIGHTS_NAME), device=str(device))
        model.load_state_dict_strict(state, source=str(directory / WEIGHTS_NAME))
        return model

    def _tied_keys(self) -> set[str]:
        """State-dict keys that alias another parameter (written once, re-tied on load)."""
        return {k for k in self.state_dict() if k.endswith("decoder.weight") and ("mlm_head" in k or "lm_head" in k)}

    def load_state_dict_strict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load with every key accounted for; tied copies may be present or absent."""
        tied = self._tied_keys()
        state = {k: v for k, v in state.items() if k not in tied}
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k not in tied]
        if missing or result.unexpected_keys:
            more = "..." if len(missing) > 10 else ""
            raise KeyError(
                f"{source}: weights do not match the model (missing: {missing[:10]}{more};"
                f" unexpected: {result.unexpected_keys[:10]})"
            )
        self.tie_weights()

    def tie_weights(self) -> None:
        """Re-tie LM-head decoders to their word embeddings."""


class SingularityRetrieval(SingularityBase):
    """Dual encoder + ITM head; with `config.task == "pretrain"` also the MLM head (ITC + ITM + MLM)."""

    def __init__(self, config: SingularityConfig) -> None:
        super().__init__(config)
        v, t = config.vision, config.text
        self.vision_proj = nn.Linear(v.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(t.hidden_size, config.embed_dim)
        self.temp = nn.Parameter(torch.tensor(config.temp))
        self.itm_head = nn.Linear(t.hidden_size, 2)
        if config.task == "pretrain":
            self.mlm_head = BertLMHead(t)
        self.tie_weights()

    def tie_weights(self) -> None:
        if hasattr(self, "mlm_head"):
            self.mlm_head.tie_to(self.text_encoder.embeddings)

    def clamp_temperature(self) -> None:
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)

    def video_features(self, pooled_video: torch.Tensor) -> torch.Tensor:
        """(B, T, D) or (B, D) -> L2-normalised ITC features."""
        return F.normalize(self.vision_proj(pooled_video), dim=-1)

    def text_features(self, pooled_text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(pooled_text), dim=-1)

    @staticmethod
    def similarity(video_feat: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
        """sim_v2t (Nv, Nt): cosine, averaged over frames when features are per frame."""
        if video_feat.ndim == 3:
            return torch.einsum("mld,nd->mln", video_feat, text_feat).mean(1)
        return video_feat @ text_feat.t()

    def match_logits(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        video_tokens: torch.Tensor | None = None,
        cross_kvs: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        cls_only: bool = True,
        self_attended: bool = False,
    ) -> torch.Tensor:
        """ITM logits (N, 2) for aligned (text, video) rows: fusion layers, then `itm_head` on CLS.
        `cls_only` (not in the release, same logits): the last fusion layer computes [CLS] alone. `cross_kvs`
        with fewer rows than texts: each K/V row serves len(texts) // rows consecutive texts.
        `self_attended`: `text_tokens` come from `text_encoder.first_self_attention` (cached per text)."""
        fused = self.text_encoder(
            hidden_states=text_tokens,
            attention_mask=text_mask,
            encoder_hidden_states=video_tokens,
            mode="fusion",
            cross_kvs=cross_kvs,
            cls_only=cls_only,
            self_attended=self_attended,
        )
        return self.itm_head(fused[:, 0])

    def mlm_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Two-stage MLM: text layers on the (masked) ids, fusion layers on the video, then the head."""
        text_tokens = self.text_encoder(input_ids, attention_mask, mode="text")
        fused = self.text_encoder(
            hidden_states=text_tokens, attention_mask=attention_mask, encoder_hidden_states=video_tokens, mode="fusion"
        )
        return self.mlm_head(fused)

    @staticmethod
    def _rank_offset_ids(n: int, device: torch.device) -> torch.Tensor:
        """Distinct ids per sample across ranks, when the caller gave none."""
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return torch.arange(n, device=device) + (rank << 32)  # apart whatever each rank's batch size

    def cross_kvs(self, video_tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values (B, nh, N, hd) of each fusion layer for these videos."""
        layers = self.text_encoder.encoder.layer[self.text_encoder.fusion_layer :]
        return [layer.crossattention.self.project_kv(video_tokens) for layer in layers]

    def itm_loss(
        self,
        sim_v2t: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        video_tokens: torch.Tensor,
        video_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
        video_kvs: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        reversed_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ITM over [positives; (text, neg video); (neg text, video)] and, given `reversed_tokens` (each
        video's fusion tokens with its frames in reverse order), [(text, its reversed video)] as further
        negatives; returns (loss, logits). With `video_kvs` (from `cross_kvs`) the videos are not
        re-projected for each pair."""
        if negatives is None:
            w_t2v, w_v2t = losses.hard_negative_weights(sim_v2t, video_ids, self.config.itm_hard_neg)
            negatives = losses.draw_negatives(w_t2v, w_v2t, generator)
        neg_video, neg_text = negatives
        b = text_tokens.shape[0]
        if video_kvs is not None:
            # rows [(text, video), (neg text, video)] per video, then (text, neg video) and (text, reversed
            # video): each video's keys/values serve its two texts in place; only the negative videos' are
            # gathered (`index_select`, whose backward on CPU is several times cheaper than advanced indexing's)
            texts = [_with_rows(text_tokens, neg_text), text_tokens]
            masks = [_with_rows(text_mask, neg_text), text_mask]
            reversed_kvs = None
            if reversed_tokens is not None:
                reversed_kvs = self.cross_kvs(reversed_tokens)
                texts.append(text_tokens)
                masks.append(text_mask)
            kvs: list[KVSegments] = []
            for i, (k, v) in enumerate(video_kvs):
                parts = [(k, v, 2 * b), (k.index_select(0, neg_video), v.index_select(0, neg_video), b)]
                if reversed_kvs is not None:
                    parts.append((*reversed_kvs[i], b))
                kvs.append(KVSegments(parts))
            grouped = self.match_logits(torch.cat(texts, 0), torch.cat(masks, 0), cross_kvs=kvs)
            # back to the release's row order [positives; (text, neg video); (neg text, video); reversed]
            pos, neg_t = grouped[0 : 2 * b : 2], grouped[1 : 2 * b : 2]
            logits = torch.cat([pos, grouped[2 * b : 3 * b], neg_t, grouped[3 * b :]])
        else:
            texts = [text_tokens, text_tokens, text_tokens[neg_text]]
            masks = [text_mask, text_mask, text_mask[neg_text]]
            videos = [video_tokens, video_tokens[neg_video], video_tokens]
            if reversed_tokens is not None:
                texts.append(text_tokens)
                masks.append(text_mask)
                videos.append(reversed_tokens)
            logits = self.match_logits(torch.cat(texts, 0), torch.cat(masks, 0), torch.cat(videos, 0), cls_only=False)
        labels = torch.cat([torch.ones(b), torch.zeros(len(logits) - b)]).long().to(logits.device)
        return F.cross_entropy(logits.float(), labels), logits

    def mlm_loss(
        self,
        masked_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        video_tokens: torch.Tensor,
        video_kvs: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over masked positions. The fast path runs the head only where labelled."""
        if video_kvs is None:
            logits = self.mlm_logits(masked_ids, attention_mask, video_tokens)
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))
        text_tokens = self.text_encoder(masked_ids, attention_mask, mode="text")
        fused = self.text_encoder(
            hidden_states=text_tokens, attention_mask=attention_mask, mode="fusion", cross_kvs=video_kvs
        )
        where = labels != -100
        if not bool(where.any()):  # nothing masked: zero loss (the release's mean over nothing is NaN)
            return fused.sum() * 0.0
        logits = self.mlm_head(fused[where])  # (n_masked, V)
        return F.cross_entropy(logits.float(), labels[where])

    def forward(
        self,
        video: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        video_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        itm_negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
        mlm_draws: losses.MaskDraws | None = None,
        loss_weights: dict[str, float] | None = None,
        itc_gather: bool = False,
        itm_reversed_negatives: bool = False,
    ) -> SingularityOutput:
        """Training losses of the release: ITC + ITM (+ MLM when pre-training). Random draws come from
        `generator`, or are pinned by `itm_negatives` (neg video per text, neg text per video) and
        `mlm_draws`. `video_ids` marks samples of the same video (soft ITC targets, never negatives).
        `itc_gather`: contrast against the whole global batch under torch.distributed (off by default, as
        the release: its ITC and ITM use the local batch only; ITM stays local either way).
        `itm_reversed_negatives` (not in the release; multi-frame videos only) adds each text paired with
        its own video played backwards as an ITM negative: right only where every caption names an event
        whose reverse is another event (moves left / right), never for static captions."""
        w = {"itc": 1.0, "itm": 1.0, "mlm": 1.0, **(loss_weights or {})}
        self.clamp_temperature()
        enc = self.encode_video(video)
        text_tokens, text_cls = self.encode_text(input_ids, attention_mask)
        video_feat, text_feat = self.video_features(enc.pooled), self.text_features(text_cls)
        sim_v2t = self.similarity(video_feat, text_feat) / self.temp
        if itc_gather:
            ids = video_ids if video_ids is not None else self._rank_offset_ids(len(input_ids), input_ids.device)
            all_video, all_text = losses.gather_with_grad(video_feat), losses.gather_with_grad(text_feat)
            all_ids = losses.gather_with_grad(ids)
            rows_v2t = self.similarity(video_feat, all_text) / self.temp
            rows_t2v = self.similarity(all_video, text_feat).t() / self.temp
            loss_itc = losses.itc_loss_rows(rows_v2t.float(), rows_t2v.float(), ids, all_ids)
        else:
            loss_itc = losses.itc_loss(sim_v2t.float(), video_ids)
        video_kvs = self.cross_kvs(enc.tokens) if self.config.fast_losses else None
        reversed_tokens = None
        if itm_reversed_negatives and enc.frame_tokens.shape[1] > 1:
            reversed_tokens = self.fuse_frames(enc.frame_tokens.flip(1))
        loss_itm, itm_logits = self.itm_loss(
            sim_v2t,
            text_tokens,
            attention_mask,
            enc.tokens,
            video_ids,
            generator,
            itm_negatives,
            video_kvs,
            reversed_tokens,
        )
        loss = w["itc"] * loss_itc + w["itm"] * loss_itm
        loss_mlm = None
        if self.config.task == "pretrain" and w["mlm"] > 0:
            t = self.config.text
            if mlm_draws is None:
                mlm_draws = losses.draw_mask(
                    input_ids.shape, t.vocab_size, self.config.mlm_prob, generator, input_ids.device
                )
            masked_ids, labels = losses.mask_tokens(
                input_ids, mlm_draws, t.pad_token_id, t.cls_token_id, t.mask_token_id
            )
            loss_mlm = self.mlm_loss(masked_ids, attention_mask, labels, enc.tokens, video_kvs)
            loss = loss + w["mlm"] * loss_mlm
        return SingularityOutput(loss, loss_itc, loss_itm, loss_mlm, itm_logits, sim_v2t)


class AnswerDecoder(nn.Module):
    """Causal BERT with cross-attention to the question states, plus its LM head (QA)."""

    def __init__(self, config: SingularityConfig) -> None:
        super().__init__()
        t = config.text
        self.bert = FusionBert(
            t,
            encoder_width=t.hidden_size,
            num_layers=config.decoder_num_layers,
            fusion_layer=0,
            causal=True,
            attn_implementation=config.attn_implementation,
        )
        self.lm_head = BertLMHead(t)
        self.lm_head.tie_to(self.bert.embeddings)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        question_states: torch.Tensor,
        question_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Next-token logits (N, L, V)."""
        hidden = self.bert(
            input_ids,
            attention_mask,
            encoder_hidden_states=question_states,
            encoder_attention_mask=question_mask,
            mode="multi_modal",
        )
        return self.lm_head(hidden)


@dataclass
class AnswerRanking:
    """Output of `rank_answers`: top-k answer-list indices, best first, and their probabilities."""

    topk_ids: torch.Tensor  # (B, k)
    topk_probs: torch.Tensor  # (B, k)
    first_token_probs: torch.Tensor | None = None  # (B, A) stage-1 scores (concat only)
    stage1_topk_ids: torch.Tensor | None = None  # (B, k) candidates before re-ranking
    candidate_loss: torch.Tensor | None = None  # (B, k) summed token loss of each candidate


class SingularityQA(SingularityBase):
    """Question encoder (text + fusion layers on the video) and the causal answer decoder."""

    def __init__(self, config: SingularityConfig) -> None:
        super().__init__(config)
        self.text_decoder = AnswerDecoder(config)

    def tie_weights(self) -> None:
        if hasattr(self, "text_decoder"):
            self.text_decoder.lm_head.tie_to(self.text_decoder.bert.embeddings)

    def encode_question(
        self, video_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Question states (B, Lq, H): all text-encoder layers, fusion ones attending to the video."""
        return self.text_encoder(input_ids, attention_mask, encoder_hidden_states=video_tokens, mode="multi_modal")

    def answer_losses(
        self,
        question_states: torch.Tensor,
        question_mask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
        answers_per_question: torch.Tensor,
    ) -> torch.Tensor:
        """Summed token loss (N_answers,) of each answer, decoded from its question's states."""
        repeats = answers_per_question.to(question_states.device)
        states = question_states.repeat_interleave(repeats, 0)
        qmask = question_mask.repeat_interleave(repeats, 0)
        logits = self.text_decoder(answer_ids, answer_mask, states, qmask)
        return losses.sequence_lm_loss(logits, answer_ids, self.config.text.pad_token_id)

    def forward(
        self,
        video: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
        answers_per_question: torch.Tensor,
        answer_weights: torch.Tensor,
    ) -> torch.Tensor:
        """QA training loss: sum over answers of weight x summed token loss, divided by the batch size."""
        enc = self.encode_video(video)
        states = self.encode_question(enc.tokens, question_ids, question_mask)
        per_answer = self.answer_losses(states, question_mask, answer_ids, answer_mask, answers_per_question)
        return (answer_weights.to(per_answer.dtype) * per_answer).sum() / video.shape[0]

    def _first_token_probs(self, states: torch.Tensor, qmask: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
        """Softmax of the first decoding step ([CLS] alone) read at each answer's first word: (B, A)."""
        start = answer_ids[0, 0].repeat(states.shape[0], 1)
        logits = self.text_decoder(start, None, states, qmask)[:, 0].float()
        return logits.softmax(-1).index_select(1, answer_ids[:, 1])

    def _candidate_loss(
        self,
        states: torch.Tensor,
        qmask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
        topk_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Summed token loss (B, k) of each candidate decoded in full (first word counted again, as the release)."""
        b, k = topk_ids.shape
        ids = answer_ids[topk_ids.reshape(-1)]
        mask = answer_mask[topk_ids.reshape(-1)]
        logits = self.text_decoder(ids, mask, states.repeat_interleave(k, 0), qmask.repeat_interleave(k, 0))
        return losses.sequence_lm_loss(logits, ids, self.config.text.pad_token_id).view(b, k)

    @torch.no_grad()
    def rank_answers(
        self,
        video: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
        k: int = 128,
        ensemble: str = "concat",
    ) -> AnswerRanking:
        """Rank the answer list (release `rank_answer`): top-k by first-token probability, re-scored by
        log p(first) - summed candidate loss, soft-maxed. Late-fusion ensembles score each frame alone."""
        k = min(k, answer_ids.shape[0])
        if ensemble == "concat":
            enc = self.encode_video(video)
            states = self.encode_question(enc.tokens, question_ids, question_mask)
            first = self._first_token_probs(states, question_mask, answer_ids)
            topk_probs, topk_ids = first.topk(k, dim=1)
            cand = self._candidate_loss(states, question_mask, answer_ids, answer_mask, topk_ids)
            scores = (topk_probs.log() - cand).softmax(-1)
            probs, order = scores.topk(k, dim=1)
            return AnswerRanking(topk_ids.gather(1, order), probs, first, topk_ids, cand)
        frame_tokens, _ = self.encode_frames(video)
        per_frame_states = [
            self.encode_question(frame_tokens[:, i], question_ids, question_mask) for i in range(frame_tokens.shape[1])
        ]
        firsts = torch.stack([self._first_token_probs(s, question_mask, answer_ids) for s in per_frame_states], -1)
        first = losses.pool_frames(firsts, ensemble).softmax(-1)  # the release soft-maxes pooled probabilities
        topk_probs, topk_ids = first.topk(k, dim=1)
        frame_scores = []
        for s in per_frame_states:  # the pooled first-token probability is reused for every frame (release)
            cand = self._candidate_loss(s, question_mask, answer_ids, answer_mask, topk_ids)
            frame_scores.append(topk_probs.log() - cand)
        scores = losses.pool_frames(torch.stack(frame_scores, -1), ensemble).softmax(-1)
        probs, order = scores.topk(k, dim=1)
        return AnswerRanking(topk_ids.gather(1, order), probs, first, topk_ids, None)


MODEL_CLASSES = {"pretrain": SingularityRetrieval, "retrieval": SingularityRetrieval, "qa": SingularityQA}


def create_model(config: SingularityConfig) -> SingularityBase:
    """A randomly initialised model of `config.task`."""
    return MODEL_CLASSES[config.task](config)


def add_temporal_modules(
    model: SingularityBase,
    num_frames: int = 4,
    num_layers: int = 2,
    add_temporal_embed: bool = True,
    update_pooler_embed: bool = False,
    embed_init_std: float = 0.0,
) -> SingularityBase:
    """The second-stage (paper Sec. 4) model: a single-frame model with temporal embeddings cut/zero-
    extended to `num_frames` and a fresh temporal encoder of `num_layers` (same weights otherwise).
    `embed_init_std` > 0 (not the release) draws the untrained temporal embeddings from N(0, std) instead
    of zeros, so frames are told apart from the first step."""
    config = SingularityConfig.from_dict(model.config.to_dict())
    config.temporal.update_pooler_embed = update_pooler_embed
    config.temporal.num_frames = num_frames
    config.temporal.add_temporal_embed = add_temporal_embed
    config.temporal.enable_encoder = num_layers > 0
    config.temporal.num_layers = max(num_layers, 1)
    new = MODEL_CLASSES[config.task](config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("temporal_vision_encoder.")}
    old = state.pop("temporal_embeddings")
    embed = torch.zeros(1, num_frames, 1, old.shape[-1], dtype=old.dtype)  # untrained slots start at zero
    if embed_init_std > 0:
        embed.normal_(0.0, embed_init_std)
    n = min(num_frames, old.shape[1])
    embed[:, :n] = old[:, :n]
    state["temporal_embeddings"] = embed
    result = new.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("temporal_vision_encoder.")]
    if missing or result.unexpected_keys:
        raise KeyError(f"cannot add temporal modules: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    new.tie_weights()
    return new


def create_empty_model(config: SingularityConfig, device: torch.device | str = "cpu") -> SingularityBase:
    """A model with uninitialised parameters (no random init) on `device`, ready to receive a full state
    dict fast."""
    with torch.device("meta"):
        model = MODEL_CLASSES[config.task](config)
    model = model.to_empty(device=device)
    for module in model.modules():
        if hasattr(module, "position_ids") and isinstance(module.position_ids, torch.Tensor):
            module.position_ids = torch.arange(module.position_ids.shape[1], device=device)[None]
    model.tie_weights()
    return model
