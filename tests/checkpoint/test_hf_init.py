"""Initial weights of pre-training: local copies of the release's BEiT and BERT are loaded, random base
weights are refused unless asked for."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import BeitConfig, BeitForImageClassification, BertConfig, BertForPreTraining

from singularity_vl.models.config import tiny_config
from singularity_vl.train.config import TrainConfig, check_initial_weights, load_train_config
from singularity_vl.train.loop import build_model


def _beit_dir(path, cfg):
    """A directory in the format of microsoft/beit-base-patch16-224-pt22k-ft22k (an image classifier
    whose weights sit under `beit.`), at the tiny preset's size."""
    v = cfg.vision
    model = BeitForImageClassification(
        BeitConfig(
            hidden_size=v.hidden_size,
            num_hidden_layers=v.num_layers,
            num_attention_heads=v.num_heads,
            intermediate_size=v.intermediate_size,
            image_size=v.image_size,
            patch_size=v.patch_size,
            layer_norm_eps=1e-12,
            layer_scale_init_value=0.1,
            use_mean_pooling=True,
            use_relative_position_bias=True,
            use_shared_relative_position_bias=False,
            use_absolute_position_embeddings=False,
            num_labels=7,
        )
    )
    model.save_pretrained(path)
    return model


def _bert_dir(path, cfg):
    """A directory in the format of bert-base-uncased (BertForPreTraining: `bert.`, `cls.predictions.`,
    `cls.seq_relationship.`), at the tiny preset's size."""
    t = cfg.text
    model = BertForPreTraining(
        BertConfig(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads,
            intermediate_size=t.intermediate_size,
        )
    )
    model.save_pretrained(path)
    return model


def test_pretraining_starts_from_local_beit_and_bert(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("pretrain")
    beit = _beit_dir(tmp_path / "beit", cfg)
    bert = _bert_dir(tmp_path / "bert", cfg)
    model = build_model(
        TrainConfig(task="pretrain", model="tiny", vision_init=str(tmp_path / "beit"), text_init=str(tmp_path / "bert"))
    )
    ours_v = model.vision_encoder.state_dict()
    hf_v = beit.beit.state_dict()
    for key in ("layers.1.mlp.fc1.weight", "layers.0.attention.q_proj.weight", "pooler.layernorm.weight"):
        assert torch.equal(ours_v[key], hf_v[key]), key
    ours_t = model.text_encoder.state_dict()
    hf_t = bert.bert.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
        assert torch.equal(ours_t[key], hf_t[key])
    # the fusion layer keeps BERT's self-attention; its cross-attention starts fresh
    fusion = cfg.text.fusion_layer
    assert torch.equal(
        ours_t[f"encoder.layer.{fusion}.output.dense.weight"], hf_t[f"encoder.layer.{fusion}.output.dense.weight"]
    )
    # the MLM head starts from BERT's
    assert torch.equal(model.mlm_head.transform.dense.weight, bert.cls.predictions.transform.dense.weight)


def test_random_base_weights_are_refused_unless_from_scratch(monkeypatch):
    with pytest.raises(ValueError, match="from_scratch=true"):
        check_initial_weights(TrainConfig(task="pretrain", model="base"))
    with pytest.raises(ValueError, match="text_init"):
        check_initial_weights(TrainConfig(task="pretrain", model="base", vision_init="/hf/beit"))
    with pytest.raises(ValueError, match="from_scratch"):
        build_model(TrainConfig(task="pretrain", model="base"))
    check_initial_weights(TrainConfig(task="pretrain", model="base", from_scratch=True))
    check_initial_weights(TrainConfig(task="pretrain", model="base", vision_init="/a", text_init="/b"))
    check_initial_weights(TrainConfig(task="pretrain", model="tiny"))  # test size: no released weights exist

    monkeypatch.setenv("SL_DATA_DIR", "/data")
    monkeypatch.setenv("SL_HF_DIR", "/hf")
    cfg = load_train_config("pretrain_5m")
    assert cfg.vision_init == "/hf/beit-base-patch16-224-pt22k-ft22k" and cfg.text_init == "/hf/bert-base-uncased"
    with pytest.raises(ValueError, match="from_scratch"):
        load_train_config("pretrain_5m", ["vision_init=null", "text_init=null"])
    assert load_train_config("pretrain_5m", ["vision_init=null", "text_init=null", "from_scratch=true"]).from_scratch


def test_bert_files_with_tensorflow_layernorm_names_load(tmp_path):
    """bert-base-uncased's own files name LayerNorm parameters `gamma` / `beta`."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    cfg = tiny_config("pretrain")
    bert = _bert_dir(tmp_path / "bert", cfg)
    weights = load_file(str(tmp_path / "bert" / "model.safetensors"))
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v.contiguous()
        for k, v in weights.items()
    }
    assert any(k.endswith("LayerNorm.gamma") for k in legacy)
    save_file(legacy, str(tmp_path / "bert" / "model.safetensors"))
    model = build_model(TrainConfig(task="pretrain", model="tiny", text_init=str(tmp_path / "bert")))
    ours = model.text_encoder.state_dict()
    hf = bert.bert.state_dict()
    for key in ("embeddings.LayerNorm.weight", "encoder.layer.1.output.LayerNorm.bias"):
        assert torch.equal(ours[key], hf[key])


def _transformers4_beit_name(key: str) -> str:
    """A BEiT weight's name as files written by transformers 4 (the hub's pt22k-ft22k files) spell it."""
    qkv = {"q": "query", "k": "key", "v": "value"}
    key = re.sub(
        r"layers\.(\d+)\.attention\.([qkv])_proj", lambda m: f"layers.{m[1]}.attention.attention.{qkv[m[2]]}", key
    )
    key = re.sub(r"layers\.(\d+)\.attention\.o_proj", r"layers.\1.attention.output.dense", key)
    key = re.sub(r"layers\.(\d+)\.relative_position_bias", r"layers.\1.attention.attention.relative_position_bias", key)
    key = re.sub(r"layers\.(\d+)\.mlp\.fc1", r"layers.\1.intermediate.dense", key)
    key = re.sub(r"layers\.(\d+)\.mlp\.fc2", r"layers.\1.output.dense", key)
    return re.sub(r"layers\.(\d+)\.", r"encoder.layer.\1.", key)


def test_beit_files_with_transformers4_names_load(tmp_path):
    """microsoft/beit-base-patch16-224-pt22k-ft22k's files use transformers 4's BEiT names."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = tiny_config("pretrain")
    beit = _beit_dir(tmp_path / "beit", cfg)
    state = beit.state_dict()
    legacy = {_transformers4_beit_name(k): v.contiguous() for k, v in state.items()}
    assert "beit.encoder.layer.1.attention.attention.query.weight" in legacy
    save_file(legacy, str(tmp_path / "beit" / "model.safetensors"))
    model = build_model(TrainConfig(task="pretrain", model="tiny", vision_init=str(tmp_path / "beit")))
    ours = model.vision_encoder.state_dict()
    for key in ("layers.1.attention.q_proj.weight", "layers.0.relative_position_bias.relative_position_bias_table"):
        assert torch.equal(ours[key], state["beit." + key]), key
