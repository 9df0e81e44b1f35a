"""`singularity-vl convert-release`: safe loading, task conversion, strictness, resizing, our format."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from singularity_vl.checkpoint.release import convert_task, load_release_state, read_release_checkpoint
from singularity_vl.checkpoint.safe_pickle import NotACheckpointError, UnsafeCheckpointError, safe_torch_load
from singularity_vl.cli import main
from singularity_vl.models.singularity import SingularityBase


@pytest.fixture(scope="module")
def tiny_release(ref_dir):
    return {
        name: load_file(str(ref_dir / f"{name}.weights.safetensors"))
        for name in ("tiny_pretrain", "tiny_retrieval", "tiny_pretrain_temporal", "tiny_retrieval_temporal")
    }


def _save_release(path, state, **extra):
    """A file laid out like the release's checkpoints: torch.save of a dict with an OmegaConf config."""
    config = OmegaConf.create({"temporal_vision_encoder": {"enable": True}, "add_temporal_embed": True, "temp": 0.07})
    torch.save({"model": state, "config": config, "epoch": 9, "global_step": 100, **extra}, path)


@pytest.mark.parametrize("temporal", ["", "_temporal"])
def test_pretrain_to_retrieval_matches_release_layout(tiny_release, temporal):
    """The reference ships the same weights in both layouts; our conversion must reproduce it."""
    converted = convert_task(tiny_release[f"tiny_pretrain{temporal}"], "retrieval")
    expected = tiny_release[f"tiny_retrieval{temporal}"]
    assert sorted(converted) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


def test_pretrain_to_qa_copies_fusion_layers_into_decoder(tiny_release):
    state = tiny_release["tiny_pretrain"]
    model, _ = load_release_state(state, task="qa")
    fusion = model.config.text.fusion_layer
    dec = model.text_decoder.bert.encoder.layer[0]
    src = state[f"text_encoder.bert.encoder.layer.{fusion}.crossattention.self.key.weight"]
    assert torch.equal(dec.crossattention.self.key.weight, src)
    assert torch.equal(
        model.text_decoder.lm_head.transform.dense.weight, state["text_encoder.cls.predictions.transform.dense.weight"]
    )
    assert model.text_decoder.lm_head.decoder.weight is model.text_decoder.bert.embeddings.word_embeddings.weight
    assert model.config.decoder_num_layers == model.config.text.num_layers - fusion


def test_retrieval_checkpoint_cannot_become_pretrain(tiny_release):
    with pytest.raises(ValueError, match="pre-training checkpoint"):
        load_release_state(tiny_release["tiny_retrieval"], task="pretrain")


def test_strict_names(tiny_release):
    state = dict(tiny_release["tiny_retrieval"])
    state["text_encoder.encoder.layer.0.attention.self.extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match="unexpected"):
        load_release_state(state)
    state = dict(tiny_release["tiny_retrieval"])
    del state["itm_head.bias"]
    with pytest.raises(KeyError, match="missing"):
        load_release_state(state)


def test_cli_convert_roundtrip(tmp_path, tiny_release, capsys):
    ckpt = tmp_path / "release.pth"
    _save_release(ckpt, tiny_release["tiny_pretrain_temporal"])
    out = tmp_path / "ours"
    assert main(["convert-release", str(ckpt), str(out), "--task", "retrieval"]) == 0
    printed = capsys.readouterr().out
    assert "ignored" in printed and "retrieval model" in printed and "temporal encoder 2 layers" in printed
    model = SingularityBase.from_pretrained(out).eval()
    direct, _ = load_release_state(tiny_release["tiny_retrieval_temporal"])
    video = torch.randn(2, 4, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(video).tokens, direct.eval().encode_video(video).tokens)
    stored = load_file(str(out / "model.safetensors"))
    assert all(not k.endswith("relative_position_index") for k in stored)


def test_tied_weights_written_once(tmp_path, tiny_release):
    ckpt = tmp_path / "release.pth"
    _save_release(ckpt, tiny_release["tiny_pretrain"])
    out = tmp_path / "pre"
    assert main(["convert-release", str(ckpt), str(out)]) == 0
    stored = load_file(str(out / "model.safetensors"))
    assert "mlm_head.decoder.weight" not in stored
    model = SingularityBase.from_pretrained(out)
    assert model.mlm_head.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight


def test_resize_frames_and_image(tmp_path, tiny_release):
    model, report = load_release_state(
        tiny_release["tiny_pretrain_temporal"], task="retrieval", num_frames=8, image_size=64
    )
    assert model.temporal_embeddings.shape[1] == 8
    old = tiny_release["tiny_pretrain_temporal"]["temporal_embeddings"]
    assert torch.equal(model.temporal_embeddings[:, :4], old)
    assert torch.count_nonzero(model.temporal_embeddings[:, 4:]) == 0  # new slots start untrained
    assert model.config.vision.image_size == 64
    table = model.vision_encoder.layers[0].relative_position_bias.relative_position_bias_table
    assert table.shape[0] == (2 * 4 - 1) ** 2 + 3
    with torch.no_grad():
        out = model.eval().encode_video(torch.randn(1, 8, 3, 64, 64))
    assert out.tokens.shape == (1, 8 * 17, 64)
    assert len(report.resized) == 2


def test_config_read_from_pickled_omegaconf(tmp_path, tiny_release):
    ckpt = tmp_path / "release.pth"
    _save_release(ckpt, tiny_release["tiny_retrieval"])
    state, config = read_release_checkpoint(ckpt)
    assert config["temporal_vision_encoder"] == {"enable": True}
    assert "itm_head.weight" in state


def test_pickle_that_runs_code_is_refused(tmp_path, tiny_release, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "evil.pth"
    torch.save({"model": tiny_release["tiny_retrieval"], "payload": Exploit()}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        safe_torch_load(ckpt)
    assert main(["convert-release", str(ckpt), str(tmp_path / "out")]) == 2
    assert "refusing" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint(tmp_path, tiny_release, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(NotACheckpointError):
        safe_torch_load(junk)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(NotACheckpointError, match="empty"):
        safe_torch_load(empty)
    good = tmp_path / "good.pth"
    _save_release(good, tiny_release["tiny_retrieval"])
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NotACheckpointError):
        safe_torch_load(truncated)
    assert main(["convert-release", str(truncated), str(tmp_path / "o")]) == 2
    assert "truncated.pth" in capsys.readouterr().err
    no_model = tmp_path / "nomodel.pth"
    torch.save({"weights": [1, 2]}, no_model)
    with pytest.raises(NotACheckpointError, match="'model'"):
        read_release_checkpoint(no_model)
    assert zipfile.is_zipfile(good)
