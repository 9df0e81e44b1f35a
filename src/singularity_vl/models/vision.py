"""Vision backbone: Hugging Face BEiT (release default) or ViT/DeiT, built from our VisionConfig."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BeitConfig, BeitModel, ViTConfig, ViTModel

from singularity_vl.models.config import VisionConfig


def hf_vision_config(cfg: VisionConfig, attn_implementation: str = "sdpa") -> BeitConfig | ViTConfig:
    """The transformers config equivalent to `cfg`."""
    common = dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        hidden_act="gelu",
        attn_implementation=attn_implementation,
    )
    if cfg.backbone == "beit":
        return BeitConfig(
            **common,
            use_mean_pooling=True,
            use_relative_position_bias=True,
            use_shared_relative_position_bias=False,
            use_absolute_position_embeddings=cfg.abs_pos_emb,
            layer_scale_init_value=cfg.layer_scale_init_value,
            drop_path_rate=cfg.drop_path_rate,
            use_mask_token=False,
        )
    if cfg.backbone == "vit":
        return ViTConfig(**common, qkv_bias=True)
    raise ValueError(f"vision.backbone must be beit or vit, got {cfg.backbone!r}")


def build_vision_encoder(cfg: VisionConfig, attn_implementation: str = "sdpa") -> nn.Module:
    """A randomly initialised backbone; load weights afterwards."""
    hf_cfg = hf_vision_config(cfg, attn_implementation)
    if cfg.backbone == "beit":
        model = BeitModel(hf_cfg, add_pooling_layer=cfg.use_pooler)
        grid = cfg.image_size // cfg.patch_size
        # transformers 5 caches this index per grid for the whole process; building it here, outside any
        # `torch.inference_mode()`, keeps a later training step at this size from failing.
        with torch.device("cpu"):  # never cache a meta-device index when built under `torch.device("meta")`
            model.layers[0].relative_position_bias.generate_relative_position_index((grid, grid))
        return model
    return ViTModel(hf_cfg, add_pooling_layer=False)


def encode_frames(encoder: nn.Module, pixel_values: torch.Tensor, backbone: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) -> tokens (N, L, D) and pooled (N, D).

    BEiT: pooled = mean of patch tokens through the pooler LayerNorm (the release's `pooler_output`).
    ViT/DeiT: pooled = the CLS token of the final (LayerNorm-ed) hidden states.
    """
    out = encoder(pixel_values=pixel_values, interpolate_pos_encoding=False)
    tokens = out.last_hidden_state
    if backbone == "beit":
        pooled = out.pooler_output if out.pooler_output is not None else tokens[:, 1:].mean(1)
    else:
        pooled = tokens[:, 0]
    return tokens, pooled


def resize_rel_pos_bias_table(table: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Resample a BEiT relative-position-bias table [(2g-1)^2 + 3, heads] to another patch grid.

    Bicubic over the (2g-1) x (2g-1) bias grid; the 3 CLS entries are kept. Used when fine-tuning
    at another image size (the release does this when loading a checkpoint at a new resolution).
    """
    num_extra = 3
    src_side = round((table.shape[0] - num_extra) ** 0.5)
    dst_side = 2 * new_grid - 1
    if src_side * src_side + num_extra != table.shape[0]:
        raise ValueError(f"relative position bias table of {table.shape[0]} rows is not (2g-1)^2 + 3")
    if src_side == dst_side:
        return table
    grid, extra = table[:-num_extra], table[-num_extra:]
    heads = table.shape[1]
    grid = grid.float().reshape(src_side, src_side, heads).permute(2, 0, 1)[None]  # (1, nh, S, S)
    grid = F.interpolate(grid, size=(dst_side, dst_side), mode="bicubic", align_corners=False)
    grid = grid[0].permute(1, 2, 0).reshape(dst_side * dst_side, heads).to(table.dtype)
    return torch.cat([grid, extra], 0)


def grid_from_table_rows(rows: int) -> int:
    """Patch-grid side g of a BEiT bias table with `rows` = (2g-1)^2 + 3 rows."""
    side = round((rows - 3) ** 0.5)
    if side * side + 3 != rows or side % 2 == 0:
        raise ValueError(f"{rows} rows is not a BEiT relative position bias table size")
    return (side + 1) // 2
