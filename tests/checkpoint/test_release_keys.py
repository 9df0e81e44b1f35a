"""Checkpoint compatibility at the paper's real size: names, shapes and conversion of all six layouts."""

from __future__ import annotations

import json

import pytest
import torch

from singularity_vl.checkpoint.release import load_release_state, ours_to_release
from singularity_vl.models.config import base_config
from singularity_vl.models.singularity import create_model

VARIANTS = ["pretrain", "pretrain_temporal", "retrieval", "retrieval_temporal", "qa", "qa_temporal"]


@pytest.fixture(scope="module")
def official(ref_dir):
    keys = json.loads((ref_dir / "official_state_dict_keys.json").read_text())
    meta = json.loads((ref_dir / "official_state_dict_meta.json").read_text())
    return keys, meta


def _variant(name: str) -> tuple[str, bool]:
    return name.split("_")[0], name.endswith("_temporal")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_release_name_has_exactly_one_home(official, variant):
    keys, _ = official
    task, temporal = _variant(variant)
    with torch.device("meta"):
        model = create_model(base_config(task, temporal))
    exported = ours_to_release(model)
    got = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in exported.items()}
    expected = {name: (shape, dtype) for name, shape, dtype in keys[variant]}
    assert sorted(got) == sorted(expected)
    assert got == expected


def _random_release_checkpoint(keys, meta, variant: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape, dtype in keys[variant]:
        if dtype == "int64":
            state[name] = torch.zeros(shape, dtype=torch.int64)
        else:
            state[name] = torch.rand(shape, generator=gen) * 0.04 - 0.02
    for group in meta[variant]["tied_groups"]:
        for alias in group[1:]:
            state[alias] = state[group[0]]
    return state


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_random_release_checkpoint_converts_without_flags(official, variant):
    keys, meta = official
    task, temporal = _variant(variant)
    state = _random_release_checkpoint(keys, meta, variant)
    model, report = load_release_state(state)
    cfg = model.config
    assert cfg.task == task
    assert cfg.vision.image_size == meta[variant]["image_res"] == 224
    assert cfg.embed_dim == meta[variant].get("embed_dim", cfg.embed_dim)
    assert cfg.text.fusion_layer == 9 and cfg.text.num_layers == 12 and cfg.text.num_heads == 12
    assert cfg.temporal.enable_encoder == temporal
    assert cfg.temporal.num_frames == (4 if temporal else 1)
    if temporal:
        assert cfg.temporal.num_layers == 2
    assert len(report.ignored_buffers) == meta[variant]["num_buffers"]
    n_unique = sum(p.numel() for p in model.parameters())
    assert n_unique == meta[variant]["num_parameters_unique"]
    exported = ours_to_release(model)
    for name, value in state.items():
        if value.dtype != torch.int64:
            assert torch.equal(exported[name], value), name
