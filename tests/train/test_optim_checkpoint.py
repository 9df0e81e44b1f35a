"""Optimisation recipe of the release and atomic, resumable checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model
from singularity_vl.train import checkpoint as ck
from singularity_vl.train.optim import (
    cosine_lambda,
    create_optimizer,
    create_scheduler,
    freeze_parameters,
    param_groups,
)


def test_no_decay_on_biases_and_norms_but_on_temperature():
    model = create_model(tiny_config("retrieval"))
    groups = param_groups(model, lr=1e-4, weight_decay=0.02, different_lr_names=["itm_head"], different_lr=1e-3)
    by_id = {id(p): (g["weight_decay"], g["lr"]) for g in groups for p in g["params"]}
    assert by_id[id(model.temp)] == (0.02, 1e-4)  # release quirk: 0-d temperature is decayed
    assert by_id[id(model.vision_layernorm.weight)] == (0.0, 1e-4)
    assert by_id[id(model.text_proj.bias)] == (0.0, 1e-4)
    assert by_id[id(model.text_proj.weight)] == (0.02, 1e-4)
    assert by_id[id(model.itm_head.weight)] == (0.02, 1e-3) and by_id[id(model.itm_head.bias)] == (0.0, 1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_fused_adamw_matches_the_per_tensor_update():
    torch.manual_seed(0)
    model = create_model(tiny_config("retrieval"))
    plain = create_model(tiny_config("retrieval"))
    plain.load_state_dict(model.state_dict())
    fused = create_optimizer(model, different_lr_names=["itm_head"], different_lr=1e-3)
    assert fused.defaults["fused"]
    groups = param_groups(plain, 1e-4, 0.02, ["itm_head"], 1e-3)
    reference = torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.02, foreach=False)
    for _ in range(3):
        for m, opt in ((model, fused), (plain, reference)):
            for p in m.parameters():
                p.grad = torch.ones_like(p) * 0.1 + p.detach() * 0.01
            opt.step()
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_cosine_schedule_with_warmup():
    f = cosine_lambda(num_warmup_steps=10, num_training_steps=110, min_lr_multi=0.01)
    assert f(0) == 0.01 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5) and f(110) == 0.01 and f(200) == 0.01
    model = torch.nn.Linear(2, 2)
    opt = create_optimizer(model, lr=1.0)
    sched = create_scheduler(opt, steps_per_epoch=4, epochs=2, warmup_epochs=0.5, min_lr_multi=0.1)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.1, 0.5, 1.0] and lrs[-1] < lrs[3]


def _state(model, opt):
    return {"optimizer": opt.state_dict(), "step": 3, "rng": ck.rng_state()}


def test_save_load_roundtrip_and_rng(tmp_path):
    model = create_model(tiny_config("pretrain"))
    opt = create_optimizer(model)
    model(
        torch.randn(2, 1, 3, 64, 64),
        torch.tensor([[101, 2000], [101, 2001]]),
        torch.ones(2, 2, dtype=torch.long),
        generator=torch.Generator().manual_seed(0),
    ).loss.backward()
    opt.step()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = ck.save_checkpoint(tmp_path, 3, model, _state(model, opt), {"epoch": 0})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    loaded, state, meta = ck.load_checkpoint(path)
    assert meta == {"step": 3, "epoch": 0}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    opt2 = create_optimizer(loaded)
    opt2.load_state_dict(state["optimizer"])
    ck.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_crash_during_save_keeps_previous(tmp_path, monkeypatch):
    model = create_model(tiny_config("retrieval"))
    opt = create_optimizer(model)
    ck.save_checkpoint(tmp_path, 1, model, _state(model, opt))

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 2, model, _state(model, opt))
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt_00000001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_keep_last_and_latest_skips_damaged(tmp_path, capsys):
    model = create_model(tiny_config("retrieval"))
    opt = create_optimizer(model)
    for step in (1, 2, 3, 4):
        ck.save_checkpoint(tmp_path, step, model, _state(model, opt), keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt_00000003", "ckpt_00000004"]
    (tmp_path / "ckpt_00000004" / "model.safetensors").write_bytes(b"truncated")
    path, _, state, _ = ck.latest_checkpoint(tmp_path)
    assert path.name == "ckpt_00000003" and state["step"] == 3
    assert "unreadable" in capsys.readouterr().out
    assert ck.latest_checkpoint(tmp_path / "none") is None


def test_frozen_word_embeddings_stay_fixed_with_their_tied_mlm_decoder():
    model = create_model(tiny_config("pretrain"))
    words = model.text_encoder.embeddings.word_embeddings.weight
    assert model.mlm_head.decoder.weight is words
    assert freeze_parameters(model, ["word_embeddings"]) == 1
    before = words.detach().clone()
    opt = create_optimizer(model, lr=1e-2)
    assert all(p is not words for g in opt.param_groups for p in g["params"])
    model(
        torch.randn(2, 1, 3, 64, 64),
        torch.tensor([[101, 2000, 102], [101, 2001, 102]]),
        torch.ones(2, 3, dtype=torch.long),
        generator=torch.Generator().manual_seed(0),
    ).loss.backward()
    opt.step()
    assert torch.equal(words, before) and words.grad is None
    with pytest.raises(KeyError, match="no_such_module"):
        freeze_parameters(model, ["no_such_module"])
