"""Every shipped config resolves with its environment variables, and says which one is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from singularity_vl.checkpoint.release import load_any
from singularity_vl.eval.run import load_eval_config
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model
from singularity_vl.train.config import load_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "src" / "singularity_vl" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_resolves(path, monkeypatch):
    monkeypatch.setenv("SL_DATA_DIR", "/data")
    monkeypatch.setenv("SL_PRETRAINED", "/ckpt/pt")
    monkeypatch.setenv("SL_HF_DIR", "/hf")
    if path.name.startswith("eval_"):
        cfg = load_eval_config(path)
        assert cfg.test_file[0].startswith("/data/")
        return
    cfg = load_train_config(path, ["optimizer.lr=3e-5"])
    assert all(spec[0].startswith("/data/") for spec in cfg.train_file)
    assert cfg.optimizer.lr == 3e-5
    monkeypatch.delenv("SL_DATA_DIR")
    with pytest.raises(ValueError, match="SL_DATA_DIR"):
        load_train_config(path)


def test_expected_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {
        "pretrain_5m",
        "ret_msrvtt",
        "ret_didemo",
        "ret_anet",
        "ret_ssv2_label",
        "ret_ssv2_template",
        "ret_coco",
        "ret_flickr",
        "qa_msrvtt",
        "qa_anet",
        "eval_msrvtt_mc",
    } <= names


def test_our_pretrain_directory_loads_as_retrieval_and_qa(tmp_path):
    torch.manual_seed(0)
    pre = create_model(tiny_config("pretrain"))
    pre.save_pretrained(tmp_path / "pt")
    ret = load_any(tmp_path / "pt", task="retrieval")
    assert ret.config.task == "retrieval" and not hasattr(ret, "mlm_head")
    assert torch.equal(ret.itm_head.weight, pre.itm_head.weight)
    qa = load_any(tmp_path / "pt", task="qa")
    fusion = pre.config.text.fusion_layer
    assert torch.equal(
        qa.text_decoder.bert.encoder.layer[0].crossattention.self.query.weight,
        pre.text_encoder.encoder.layer[fusion].crossattention.self.query.weight,
    )


def test_shipped_config_by_name(monkeypatch):
    monkeypatch.setenv("SL_DATA_DIR", "/data")
    monkeypatch.setenv("SL_PRETRAINED", "/ckpt/pt")
    cfg = load_train_config("ret_msrvtt")
    assert cfg.task == "retrieval" and cfg.train_file[0][0].startswith("/data/")
    assert load_train_config("ret_msrvtt.yaml").train_file == cfg.train_file
    with pytest.raises(FileNotFoundError, match="ret_msrvtt"):
        load_train_config("no_such_recipe")
