"""Checkpoint compatibility with the original release (jayleicn/singularity).

One explicit key map (templates with `{}` for layer numbers) between the release's state-dict names and
ours, an explicit set of ignored buffers and tied aliases, architecture inference from the weights
themselves, and the release's task conversions (pretrain -> retrieval / QA).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from singularity_vl.checkpoint.safe_pickle import NotACheckpointError, PickledConfigNode, safe_torch_load
from singularity_vl.models.config import SingularityConfig, TemporalConfig, TextConfig, VisionConfig
from singularity_vl.models.singularity import SingularityBase, create_empty_model, create_model
from singularity_vl.models.vision import grid_from_table_rows, resize_rel_pos_bias_table

# release (transformers 4.15 BEiT) -> ours (transformers 5 BEiT), under `vision_encoder.`
_VISION_MAP = {
    "encoder.layer.{}.lambda_1": "layers.{}.lambda_1",
    "encoder.layer.{}.lambda_2": "layers.{}.lambda_2",
    "encoder.layer.{}.attention.attention.query.weight": "layers.{}.attention.q_proj.weight",
    "encoder.layer.{}.attention.attention.query.bias": "layers.{}.attention.q_proj.bias",
    "encoder.layer.{}.attention.attention.key.weight": "layers.{}.attention.k_proj.weight",
    "encoder.layer.{}.attention.attention.value.weight": "layers.{}.attention.v_proj.weight",
    "encoder.layer.{}.attention.attention.value.bias": "layers.{}.attention.v_proj.bias",
    "encoder.layer.{}.attention.attention.relative_position_bias.relative_position_bias_table": (
        "layers.{}.relative_position_bias.relative_position_bias_table"
    ),
    "encoder.layer.{}.attention.output.dense.weight": "layers.{}.attention.o_proj.weight",
    "encoder.layer.{}.attention.output.dense.bias": "layers.{}.attention.o_proj.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.mlp.fc1.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.mlp.fc1.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.mlp.fc2.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.mlp.fc2.bias",
    "encoder.layer.{}.layernorm_before.weight": "layers.{}.layernorm_before.weight",
    "encoder.layer.{}.layernorm_before.bias": "layers.{}.layernorm_before.bias",
    "encoder.layer.{}.layernorm_after.weight": "layers.{}.layernorm_after.weight",
    "encoder.layer.{}.layernorm_after.bias": "layers.{}.layernorm_after.bias",
    "embeddings.cls_token": "embeddings.cls_token",
    "embeddings.patch_embeddings.projection.weight": "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embeddings.projection.bias": "embeddings.patch_embeddings.projection.bias",
    "pooler.layernorm.weight": "pooler.layernorm.weight",
    "pooler.layernorm.bias": "pooler.layernorm.bias",
}
# Buffers in release files that carry no information (recomputed here).
_IGNORED = (
    "vision_encoder.encoder.layer.{}.attention.attention.relative_position_bias.relative_position_index",
    "{text}embeddings.position_ids",
)
# LM head: release `cls.predictions.` -> ours; `cls.predictions.bias` aliases `decoder.bias`, and the
# decoder weight aliases the word embeddings (tied).
_LM_HEAD_MAP = {
    "transform.dense.weight": "transform.dense.weight",
    "transform.dense.bias": "transform.dense.bias",
    "transform.LayerNorm.weight": "transform.LayerNorm.weight",
    "transform.LayerNorm.bias": "transform.LayerNorm.bias",
    "decoder.bias": "decoder.bias",
    "decoder.weight": "decoder.weight",
}


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)") + "$")


@dataclass
class KeyMap:
    """release name -> our name for one task layout; `aliases` are release names duplicating another entry."""

    rules: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    ignored: list[re.Pattern[str]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # release alias -> release primary

    def add(self, release: str, ours: str) -> None:
        self.rules.append((_template_regex(release), ours))

    def to_ours(self, name: str) -> str | None:
        for pattern, ours in self.rules:
            m = pattern.match(name)
            if m:
                return ours.format(*m.groups())
        return None

    def is_ignored(self, name: str) -> bool:
        return any(p.match(name) for p in self.ignored)


def release_text_prefix(task: str) -> str:
    """Where the release keeps the text encoder: `text_encoder.bert.` in pre-training checkpoints."""
    return "text_encoder.bert." if task == "pretrain" else "text_encoder."


def key_map(task: str) -> KeyMap:
    """The explicit key map between the release's layout for `task` and ours."""
    km = KeyMap()
    for rel, ours in _VISION_MAP.items():
        km.add("vision_encoder." + rel, "vision_encoder." + ours)
    for same in ("vision_layernorm.weight", "vision_layernorm.bias", "temporal_embeddings"):
        km.add(same, same)
    km.rules.append((re.compile(r"^(temporal_vision_encoder\..+)$"), "{}"))  # identical names
    text = release_text_prefix(task)
    km.rules.append(
        (re.compile("^" + re.escape(text) + r"(embeddings\.(?!position_ids).+|encoder\..+)$"), "text_encoder.{}")
    )
    for ign in _IGNORED:
        km.ignored.append(_template_regex(ign.replace("{text}", text)))
    if task in ("pretrain", "retrieval"):
        for same in (
            "vision_proj.weight",
            "vision_proj.bias",
            "text_proj.weight",
            "text_proj.bias",
            "itm_head.weight",
            "itm_head.bias",
            "temp",
        ):
            km.add(same, same)
    heads = []
    if task == "pretrain":
        heads.append(("text_encoder.cls.predictions.", "mlm_head.", "text_encoder.bert."))
    if task == "qa":
        km.rules.append(
            (re.compile(r"^text_decoder\.bert\.(embeddings\.(?!position_ids).+|encoder\..+)$"), "text_decoder.bert.{}")
        )
        km.ignored.append(_template_regex("text_decoder.bert.embeddings.position_ids"))
        heads.append(("text_decoder.cls.predictions.", "text_decoder.lm_head.", "text_decoder.bert."))
    for rel_prefix, our_prefix, bert_prefix in heads:
        for rel, ours in _LM_HEAD_MAP.items():
            if rel != "decoder.weight":
                km.add(rel_prefix + rel, our_prefix + ours)
        km.aliases[rel_prefix + "bias"] = rel_prefix + "decoder.bias"
        km.aliases[rel_prefix + "decoder.weight"] = bert_prefix + "embeddings.word_embeddings.weight"
    return km


def detect_task(state: dict[str, torch.Tensor]) -> str:
    """Which release model wrote this state dict."""
    if any(k.startswith("text_decoder.") for k in state):
        return "qa"
    if any(k.startswith("text_encoder.bert.") for k in state):
        return "pretrain"
    if any(k.startswith("text_encoder.") for k in state):
        return "retrieval"
    raise KeyError("no text_encoder.* weights: not a SINGULARITY checkpoint")


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile("^" + re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _need(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise KeyError(f"missing weight {key!r}: not a complete SINGULARITY checkpoint")
    return state[key]


def infer_config(
    state: dict[str, torch.Tensor],
    task: str | None = None,
    release_config: dict[str, Any] | None = None,
    text_heads: int | None = None,
) -> SingularityConfig:
    """The architecture of a release state dict, read from its weights (and the pickled config if any).

    Text attention heads are not visible in weights: taken from `text_heads`, else equal to the vision
    heads when both widths match (true for every release model), else width // 64 (BERT convention).
    """
    source = detect_task(state)
    task = task or source
    if any(k.startswith("vision_encoder.embeddings.position_embeddings") for k in state):
        raise ValueError("ViT/DeiT release checkpoints are not supported by the converter (BEiT only)")
    table = _need(
        state, "vision_encoder.encoder.layer.0.attention.attention.relative_position_bias.relative_position_bias_table"
    )
    proj = _need(state, "vision_encoder.embeddings.patch_embeddings.projection.weight")
    patch = proj.shape[-1]
    vision = VisionConfig(
        backbone="beit",
        image_size=grid_from_table_rows(table.shape[0]) * patch,
        patch_size=patch,
        hidden_size=proj.shape[0],
        num_layers=_count_layers(state, "vision_encoder.encoder.layer."),
        num_heads=table.shape[1],
        intermediate_size=_need(state, "vision_encoder.encoder.layer.0.intermediate.dense.weight").shape[0],
        use_pooler="vision_encoder.pooler.layernorm.weight" in state,
    )
    tp = release_text_prefix(source)
    words = _need(state, tp + "embeddings.word_embeddings.weight")
    n_text = _count_layers(state, tp + "encoder.layer.")
    cross = sorted(
        {int(m.group(1)) for k in state if (m := re.match(re.escape(tp) + r"encoder\.layer\.(\d+)\.crossattention", k))}
    )
    if not cross:
        raise ValueError("the text encoder has no cross-attention layers: not a SINGULARITY checkpoint")
    hidden = words.shape[1]
    if text_heads is None:
        text_heads = vision.num_heads if hidden == vision.hidden_size else max(1, hidden // 64)
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden_size=hidden,
        num_layers=n_text,
        num_heads=text_heads,
        intermediate_size=_need(state, tp + "encoder.layer.0.intermediate.dense.weight").shape[0],
        fusion_layer=cross[0],
        max_position_embeddings=_need(state, tp + "embeddings.position_embeddings.weight").shape[0],
        type_vocab_size=_need(state, tp + "embeddings.token_type_embeddings.weight").shape[0],
    )
    n_frames = _need(state, "temporal_embeddings").shape[1]
    n_temporal = _count_layers(state, "temporal_vision_encoder.layer.")
    add_embed = n_frames > 1 or n_temporal > 0
    if release_config and isinstance(release_config.get("add_temporal_embed"), bool):
        add_embed = release_config["add_temporal_embed"]
    temporal = TemporalConfig(
        num_frames=n_frames,
        add_temporal_embed=add_embed,
        enable_encoder=n_temporal > 0,
        num_layers=n_temporal or 2,
    )
    cfg = SingularityConfig(task=task, vision=vision, text=text, temporal=temporal)  # type: ignore[arg-type]
    if "vision_proj.weight" in state:
        cfg.embed_dim = state["vision_proj.weight"].shape[0]
    if source == "qa":
        cfg.decoder_num_layers = _count_layers(state, "text_decoder.bert.encoder.layer.")
    elif task == "qa":
        cfg.decoder_num_layers = n_text - cross[0]
    if task == "qa":
        cfg.vision.use_pooler = False
    if release_config:
        for key in ("temp", "mlm_prob", "itm_hard_neg"):
            if key in release_config and isinstance(release_config[key], (int, float, bool)):
                setattr(cfg, key, type(getattr(cfg, key))(release_config[key]))
    cfg.validate()
    return cfg


def convert_task(state: dict[str, torch.Tensor], target: str) -> dict[str, torch.Tensor]:
    """The release's layout conversions (`tasks/shared_utils.py:setup_model`): pretrain -> retrieval drops
    the `bert.` level and the MLM head; pretrain -> QA also copies embeddings, fusion layers and the MLM
    head into the answer decoder."""
    source = detect_task(state)
    if source == target:
        return dict(state)
    if source != "pretrain":
        raise ValueError(f"cannot convert a {source} checkpoint to {target}; start from a pre-training checkpoint")
    out: dict[str, torch.Tensor] = {}
    fusion_layer = min(
        int(m.group(1))
        for k in state
        if (m := re.match(r"text_encoder\.bert\.encoder\.layer\.(\d+)\.crossattention", k))
    )
    for key, value in state.items():
        if key.startswith("text_encoder.cls."):
            if target == "qa":
                out["text_decoder." + key[len("text_encoder.") :]] = value
            continue
        if key.startswith("text_encoder.bert."):
            rest = key[len("text_encoder.bert.") :]
            out["text_encoder." + rest] = value
            if target == "qa":
                m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", rest)
                if m is None:
                    out["text_decoder.bert." + rest] = value
                elif int(m.group(1)) >= fusion_layer:
                    out[f"text_decoder.bert.encoder.layer.{int(m.group(1)) - fusion_layer}.{m.group(2)}"] = value
            continue
        if target == "qa" and (
            key.startswith(("vision_proj.", "text_proj.", "itm_head.", "vision_encoder.pooler.")) or key == "temp"
        ):
            continue
        out[key] = value
    return out


def resize_temporal_embeddings(embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Cut to `num_frames`, or extend with zero (untrained) slots, as the release does on load."""
    if num_frames <= embed.shape[1]:
        return embed[:, :num_frames].clone()
    new = torch.zeros(embed.shape[0], num_frames, *embed.shape[2:], dtype=embed.dtype)
    new[:, : embed.shape[1]] = embed
    return new


@dataclass
class LoadReport:
    """What a conversion did, for the one-screen summary."""

    source_task: str
    target_task: str
    loaded: int = 0
    ignored_buffers: list[str] = field(default_factory=list)
    tied_aliases: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"release {self.source_task} checkpoint -> {self.target_task} model: {self.loaded} tensors loaded",
        ]
        if self.ignored_buffers:
            lines.append(
                f"ignored {len(self.ignored_buffers)} recomputed buffers (relative_position_index, position_ids)"
            )
        if self.tied_aliases:
            lines.append(f"tied aliases checked: {', '.join(self.tied_aliases)}")
        for r in self.resized:
            lines.append(f"resized: {r}")
        return "\n".join(lines)


def release_to_ours(
    state: dict[str, torch.Tensor], model: SingularityBase, task: str
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map a release state dict (already in `task`'s layout) to our names, strictly in both directions."""
    km = key_map(task)
    ours_expected = {k for k in model.state_dict() if k not in model._tied_keys()}
    out: dict[str, torch.Tensor] = {}
    report = LoadReport(detect_task(state), task)
    unknown: list[str] = []
    for name, value in state.items():
        if km.is_ignored(name):
            report.ignored_buffers.append(name)
            continue
        if name in km.aliases:
            primary = km.aliases[name]
            if primary in state and not torch.equal(state[primary], value):
                raise ValueError(f"{name} should be tied to {primary} but differs")
            report.tied_aliases.append(name)
            continue
        ours = km.to_ours(name)
        if ours is None or ours not in ours_expected:
            unknown.append(name)
            continue
        if ours in out:
            raise ValueError(f"two release keys map to {ours}")
        out[ours] = value
    missing = sorted(ours_expected - set(out))
    if unknown or missing:
        raise KeyError(
            "release checkpoint does not match the model: "
            f"unexpected {unknown[:8]}{'...' if len(unknown) > 8 else ''}; "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}"
        )
    report.loaded = len(out)
    return out, report


def ours_to_release(model: SingularityBase) -> dict[str, torch.Tensor]:
    """Our model's weights under the release's names (buffers and tied aliases included): the layout the
    release's `load_state_dict` expects."""
    task = model.config.task
    km = key_map(task)
    ours_state = model.state_dict()
    reverse: dict[str, str] = {}
    release: dict[str, torch.Tensor] = {}
    for name in _release_names(model):
        if km.is_ignored(name) or name in km.aliases:
            continue
        ours = km.to_ours(name)
        if ours is None or ours not in ours_state:
            raise KeyError(f"no home for release key {name}")
        reverse[ours] = name
        release[name] = ours_state[ours]
    for alias, primary in km.aliases.items():
        release[alias] = release[primary]
    grid = model.config.vision.image_size // model.config.vision.patch_size
    with torch.device("cpu"):
        index = model.vision_encoder.layers[0].relative_position_bias.generate_relative_position_index((grid, grid))
    for name in _release_names(model):
        if name.endswith("relative_position_index"):
            release[name] = index.clone()
        elif name.endswith("embeddings.position_ids"):
            release[name] = torch.arange(model.config.text.max_position_embeddings)[None]
    return release


def _release_names(model: SingularityBase) -> list[str]:
    """Every release state-dict name of a model with our model's architecture."""
    cfg = model.config
    task = cfg.task
    names: list[str] = []
    for ours in model.state_dict():
        if ours.startswith("vision_encoder."):
            rest = ours[len("vision_encoder.") :]
            for rel, o in _VISION_MAP.items():
                m = _template_regex(o).match(rest)
                if m:
                    names.append("vision_encoder." + rel.format(*m.groups()))
                    if rel.endswith("relative_position_bias_table"):
                        names.append("vision_encoder." + _IGNORED[0].split("vision_encoder.")[1].format(*m.groups()))
                    break
        elif ours.startswith("text_encoder."):
            names.append(release_text_prefix(task) + ours[len("text_encoder.") :])
        elif ours.startswith("mlm_head."):
            names.append("text_encoder.cls.predictions." + ours[len("mlm_head.") :])
        elif ours.startswith("text_decoder.lm_head."):
            names.append("text_decoder.cls.predictions." + ours[len("text_decoder.lm_head.") :])
        else:
            names.append(ours)
    text = release_text_prefix(task)
    names.append(text + "embeddings.position_ids")
    if task == "pretrain":
        names.append("text_encoder.cls.predictions.bias")
    if task == "qa":
        names.append("text_decoder.bert.embeddings.position_ids")
        names.append("text_decoder.cls.predictions.bias")
    return names


def read_release_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, plain config if one was pickled) of a release `.pth`, loaded without running code."""
    obj = safe_torch_load(path)
    config = None
    if isinstance(obj, dict) and "model" in obj:
        state = obj["model"]
        raw = obj.get("config")
        if isinstance(raw, PickledConfigNode):
            config = raw.to_plain()
        elif isinstance(raw, dict):
            config = raw
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise NotACheckpointError(f"{path}: expected a dict with a 'model' state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotACheckpointError(f"{path}: 'model' is not a state dict of tensors")
    return dict(state), config if isinstance(config, dict) else None


def load_release_state(
    state: dict[str, torch.Tensor],
    task: str | None = None,
    release_config: dict[str, Any] | None = None,
    num_frames: int | None = None,
    image_size: int | None = None,
    text_heads: int | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[SingularityBase, LoadReport]:
    """Build our model for `task` (default: the checkpoint's own) from a release state dict."""
    source = detect_task(state)
    task = task or source
    cfg = infer_config(state, task, release_config, text_heads)
    cfg.attn_implementation = attn_implementation  # type: ignore[assignment]
    converted = convert_task(state, task)
    resized = []
    if num_frames is not None and num_frames != cfg.temporal.num_frames:
        converted["temporal_embeddings"] = resize_temporal_embeddings(converted["temporal_embeddings"], num_frames)
        resized.append(f"temporal_embeddings {cfg.temporal.num_frames} -> {num_frames} frames")
        cfg.temporal.num_frames = num_frames
    if image_size is not None and image_size != cfg.vision.image_size:
        grid = image_size // cfg.vision.patch_size
        for key in converted:
            if key.endswith("relative_position_bias_table"):
                converted[key] = resize_rel_pos_bias_table(converted[key], grid)
        resized.append(f"relative position bias {cfg.vision.image_size} -> {image_size} px (bicubic)")
        cfg.vision.image_size = image_size
    model = create_empty_model(cfg)
    ours, report = release_to_ours(converted, model, task)
    report.source_task = source
    report.resized = resized
    model.load_state_dict_strict(ours, source="release checkpoint")
    return model, report


def convert_release(
    path: str | Path, out_dir: str | Path, task: str | None = None, **kwargs: Any
) -> tuple[SingularityBase, LoadReport]:
    """Read a release `.pth` safely, convert it to `task`, and write our format to `out_dir`."""
    state, config = read_release_checkpoint(path)
    try:
        model, report = load_release_state(state, task, config, **kwargs)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
    model.save_pretrained(out_dir)
    return model, report


# What each change of task leaves behind of our own model (everything else must find a home)
_DROPPED_BY_TASK = {
    "retrieval": ("mlm_head.",),
    "qa": ("mlm_head.", "itm_head.", "vision_proj.", "text_proj.", "temp", "vision_encoder.pooler."),
}


def convert_own(
    model: SingularityBase,
    task: str,
    num_frames: int | None = None,
    image_size: int | None = None,
    text_heads: int | None = None,
) -> SingularityBase:
    """Our model for another task with the config it was saved with: only what differs between the tasks
    changes (pretrain -> retrieval drops the MLM head; pretrain -> QA builds the answer decoder from the
    embeddings, fusion layers and MLM head, as the release does, and drops the ITC/ITM heads). Every other
    weight keeps its name and value; a weight that would be left behind is an error."""
    source = model.config.task
    if text_heads is not None and text_heads != model.config.text.num_heads:
        raise ValueError(
            f"text_heads={text_heads}, but this model was saved with {model.config.text.num_heads} text heads"
        )
    if source != task and (source != "pretrain" or task not in _DROPPED_BY_TASK):
        raise ValueError(f"cannot convert a {source} model to {task}; start from a pre-training model")
    cfg = SingularityConfig.from_dict(model.config.to_dict())
    cfg.task = task  # type: ignore[assignment]
    fusion = cfg.text.fusion_layer
    if task == "qa" and source != "qa":
        cfg.decoder_num_layers = cfg.text.num_layers - fusion
        cfg.vision.use_pooler = False
    state = {k: v for k, v in model.state_dict().items() if k not in model._tied_keys()}
    if num_frames is not None and num_frames != cfg.temporal.num_frames:
        state["temporal_embeddings"] = resize_temporal_embeddings(state["temporal_embeddings"], num_frames)
        cfg.temporal.num_frames = num_frames
    if image_size is not None and image_size != cfg.vision.image_size:
        if cfg.vision.abs_pos_emb or cfg.vision.backbone != "beit":
            raise ValueError("image_size can be changed on load only for BEiT without absolute position embeddings")
        grid = image_size // cfg.vision.patch_size
        for key in state:
            if key.endswith("relative_position_bias_table"):
                state[key] = resize_rel_pos_bias_table(state[key], grid)
        cfg.vision.image_size = image_size
    cfg.validate()
    # The release's QA decoder copies the fusion layers, whose cross-attention reads video tokens; the
    # decoder's reads question states. With widths that differ, those key/value projections cannot be copied
    # and keep a fresh init (at the release's sizes both are 768 wide and everything is copied).
    fresh = re.compile(r"text_decoder\.bert\.encoder\.layer\.\d+\.crossattention\.self\.(key|value)\.")
    widths_differ = task == "qa" and source != "qa" and cfg.vision.hidden_size != cfg.text.hidden_size
    new = create_model(cfg) if widths_differ else create_empty_model(cfg)
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in new.state_dict().items():
        if key in new._tied_keys():
            continue
        if widths_differ and fresh.match(key):
            out[key] = value
            continue
        if key.startswith("text_decoder.") and source != "qa":
            rest = key[len("text_decoder.") :]
            m = re.match(r"bert\.encoder\.layer\.(\d+)\.(.+)$", rest)
            if m:
                origin = f"text_encoder.encoder.layer.{int(m.group(1)) + fusion}.{m.group(2)}"
            elif rest.startswith("bert."):
                origin = "text_encoder." + rest[len("bert.") :]
            else:
                origin = "mlm_head." + rest[len("lm_head.") :]
        else:
            origin = key
        if origin not in state:
            raise KeyError(f"{task} model needs {key} ({origin} in the {source} model), which it does not have")
        out[key] = state[origin].clone()
        used.add(origin)
    dropped = _DROPPED_BY_TASK.get(task, ()) if source != task else ()
    left = sorted(k for k in state if k not in used and not k.startswith(dropped))
    if left:
        raise KeyError(f"converting the {source} model to {task} would drop {left[:8]}")
    new.load_state_dict_strict(out, source=f"{source} model converted to {task}")
    if widths_differ:
        warnings.warn(
            f"the QA answer decoder's cross-attention key/value projections start from a fresh init: the fusion "
            f"layers they would come from read {cfg.vision.hidden_size}-wide video tokens, the decoder reads "
            f"{cfg.text.hidden_size}-wide question states",
            stacklevel=2,
        )
    return new


def load_any(path: str | Path, task: str | None = None, **kwargs: Any) -> SingularityBase:
    """Our directory (`config.json` + `model.safetensors`) or a release `.pth` file, for `task` (default: its
    own). Our directory keeps the config it was saved with (`convert_own`); a release file's architecture is
    read from its weights."""
    path = Path(path)
    if path.is_dir():
        model = SingularityBase.from_pretrained(path)
        if (task is None or task == model.config.task) and not any(v is not None for v in kwargs.values()):
            return model
        try:
            return convert_own(model, task or model.config.task, **kwargs)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: {e.args[0] if e.args else e}") from e
    state, config = read_release_checkpoint(path)
    return load_release_state(state, task, config, **kwargs)[0]
