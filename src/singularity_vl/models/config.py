"""Typed architecture configs for SINGULARITY, with the paper's `base` and a CPU-sized `tiny` preset."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Task = Literal["pretrain", "retrieval", "qa"]
AttnImpl = Literal["sdpa", "eager"]


@dataclass
class VisionConfig:
    """Image backbone; frames are encoded independently by it."""

    backbone: Literal["beit", "vit"] = "beit"  # HF BeitModel (release default) or ViTModel (DeiT/ViT)
    image_size: int = 224  # input resolution; relative-position tables are resampled on load when it changes
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    drop_path_rate: float = 0.1  # stochastic depth, training only
    layer_scale_init_value: float = 0.1  # BEiT layer scale (lambda_1/2)
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    use_pooler: bool = True  # BEiT mean-pool + LayerNorm; the release's QA model has none
    # BEiT: learned absolute position embeddings as well as the relative position bias (the release's BEiT
    # has none, so its tokens do not know where they are; ViT always has them)
    abs_pos_emb: bool = False


@dataclass
class TextConfig:
    """BERT text encoder whose layers from `fusion_layer` on cross-attend to the video tokens."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    fusion_layer: int = 9  # layers [0, fusion_layer) are text-only, the rest add cross-attention
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103


@dataclass
class TemporalConfig:
    """Temporal embeddings and the optional temporal encoder (paper Sec. 4, SSv2 experiments)."""

    num_frames: int = 1  # number of learned temporal embeddings (sliced or interpolated at run time)
    add_temporal_embed: bool = False  # add temporal_embeddings[t] to every token of frame t
    enable_encoder: bool = False  # run BERT layers across frames at each token position (only when T > 1)
    num_layers: int = 2
    # the release's `update_pooler_embed`: each frame's CLS token after the temporal encoder replaces its
    # pooled feature, so the dual encoder (ITC) sees time too; off by default, as in the release
    update_pooler_embed: bool = False


@dataclass
class SingularityConfig:
    """Whole-model config: saved as `config.json` beside `model.safetensors`."""

    task: Task = "retrieval"  # pretrain (ITC+ITM+MLM), retrieval (ITC+ITM), qa (answer decoder)
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    embed_dim: int = 256  # ITC projection size
    temp: float = 0.07  # initial contrastive temperature, clamped to [0.001, 0.5]
    mlm_prob: float = 0.5  # the release masks half the tokens, not 15%
    itm_hard_neg: bool = True  # ITM negatives drawn from softmax(sim); else uniform among non-positives
    decoder_num_layers: int = 3  # QA answer decoder depth (the release hard-codes 3)
    attn_implementation: AttnImpl = "sdpa"  # "eager" keeps an explicit softmax(QK^T) path for comparison
    # Training-loss speed-ups with identical numbers: each video's cross-attention keys/values are computed
    # once and shared by its ITM pairs and the MLM pass; MLM logits only at masked positions.
    # False runs the release's procedure (re-projecting the video for every pair).
    fast_losses: bool = True
    gradient_checkpointing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SingularityConfig:
        """Build from a nested dict; unknown keys are an error naming the key."""
        data = dict(data)
        sub = {"vision": VisionConfig, "text": TextConfig, "temporal": TemporalConfig}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r} (known: {sorted(known)})")
            if key in sub:
                sub_known = {f.name for f in dataclasses.fields(sub[key])}
                bad = set(value) - sub_known
                if bad:
                    raise ValueError(f"unknown config key(s) {sorted(bad)} in {key!r}")
                kwargs[key] = sub[key](**value)
            else:
                kwargs[key] = value
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SingularityConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def validate(self) -> None:
        t, v = self.text, self.vision
        if self.task not in ("pretrain", "retrieval", "qa"):
            raise ValueError(f"task must be pretrain, retrieval or qa, got {self.task!r}")
        if not 0 < t.fusion_layer < t.num_layers:
            raise ValueError(f"text.fusion_layer={t.fusion_layer} must be in (0, num_layers={t.num_layers})")
        if t.hidden_size % t.num_heads or v.hidden_size % v.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads (text and vision)")
        if v.image_size % v.patch_size:
            raise ValueError(f"vision.image_size={v.image_size} is not a multiple of patch_size={v.patch_size}")
        if self.temporal.num_frames < 1:
            raise ValueError("temporal.num_frames must be >= 1")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be sdpa or eager, got {self.attn_implementation!r}")


def base_config(task: Task = "retrieval", temporal: bool = False) -> SingularityConfig:
    """The paper's size: BEiT-base/16 at 224 px, BERT-base with fusion from layer 9, 256-d ITC space."""
    cfg = SingularityConfig(task=task)
    if temporal:
        cfg.temporal = TemporalConfig(num_frames=4, add_temporal_embed=True, enable_encoder=True, num_layers=2)
    if task == "qa":
        cfg.vision.use_pooler = False
    return cfg


def tiny_config(task: Task = "retrieval", temporal: bool = False) -> SingularityConfig:
    """A few-hundred-k-parameter model with the real BERT vocabulary, for tests and CPU demos."""
    cfg = SingularityConfig(
        task=task,
        vision=VisionConfig(
            image_size=64, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, drop_path_rate=0.0
        ),
        text=TextConfig(hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128, fusion_layer=2),
        embed_dim=32,
    )
    if temporal:
        cfg.temporal = TemporalConfig(num_frames=4, add_temporal_embed=True, enable_encoder=True, num_layers=2)
    if task == "qa":
        cfg.vision.use_pooler = False
    return cfg


PRESETS = {"base": base_config, "tiny": tiny_config}


def preset(name: str, task: Task = "retrieval", temporal: bool = False) -> SingularityConfig:
    """Config by preset name (`base`, `tiny`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](task=task, temporal=temporal)
