"""End to end from a release checkpoint: `singularity-vl evaluate` on a `.pth` laid out as the release saves
them (the reference's tiny retrieval weights) and a recipe-style YAML, against the same weights scored
directly; and the texts it encodes are the release's ids."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from singularity_vl.checkpoint.release import load_any, load_release_state
from singularity_vl.cli import main
from singularity_vl.data.annotations import load_retrieval_eval
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.retrieval import rerank
from singularity_vl.eval.run import encode_media, encode_text_list, load_eval_config

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def release_case(ref_dir, ref_meta, tmp_path_factory):
    root = tmp_path_factory.mktemp("release_eval")
    state = load_file(str(ref_dir / "tiny_retrieval.weights.safetensors"))
    config = OmegaConf.create(ref_meta["tiny_pretrain"]["config"])
    torch.save({"model": state, "config": config, "epoch": 4, "global_step": 10}, root / "ckpt_best.pth")
    # the reference's tokenizer: the first 4096 lines of bert-base-uncased's vocabulary
    vocab = resources.files("singularity_vl") / "data" / "vocab" / "bert-base-uncased-vocab.txt"
    (root / "vocab4096.txt").write_text("".join(vocab.read_text(encoding="utf-8").splitlines(True)[:4096]))
    for i in range(4):
        write_video(root / f"v{i}.mp4", moving_square_frames(8, 48, 64, seed=i), fps=8, gop=4)
    # the reference's evaluation set: text j belongs to video j mod 4 (meta eval_txt2img)
    texts, txt2img = ref_meta["eval_texts"], ref_meta["tiny_pretrain"]["eval_txt2img"]
    anno = [
        {"video": f"v{i}.mp4", "caption": [t for t, v in zip(texts, txt2img, strict=True) if v == i]} for i in range(4)
    ]
    (root / "test.json").write_text(json.dumps(anno))
    # a recipe as shipped (train_file and all): evaluate reads its test-time settings
    recipe = {
        "task": "retrieval",
        "train_file": [[str(root / "test.json"), str(root), "video"]],
        "test_file": [str(root / "test.json"), str(root), "video"],
        "num_frames_test": config.video_input.num_frames_test,
        "k_test": config.k_test,
        "max_txt_l": config.max_txt_l,
        "batch_size_test": 2,
        "tokenizer": str(root / "vocab4096.txt"),
        "optimizer": {"lr": 1e-5},
    }
    (root / "recipe.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(recipe)))
    return root, state


def test_evaluate_release_pth_with_a_recipe(release_case, ref_dir, ref_meta, tmp_path):
    root, state = release_case
    args = ["evaluate", "--config", str(root / "recipe.yaml"), "--checkpoint", str(root / "ckpt_best.pth")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert got["num_frames_test"] == 4 and got["ensemble"] == "concat"

    # the same evaluation by hand, from the weights as the reference stores them
    cfg = load_eval_config(root / "recipe.yaml")
    model, _ = load_release_state(state, task="retrieval")
    model.eval()
    tokenizer = ReleaseTokenizer(cfg.tokenizer)
    ev = load_retrieval_eval(cfg.test_file)
    assert sorted(ev.texts) == sorted(ref_meta["eval_texts"])
    ids = tokenizer(ev.texts, cfg.max_txt_l)["input_ids"]
    release_ids = load_file(str(ref_dir / "tiny_pretrain.io.safetensors"))["eval_input_ids"]
    order = [ref_meta["eval_texts"].index(t) for t in ev.texts]
    assert torch.equal(ids, release_ids[order])  # the release's tokens for every evaluated text
    with torch.no_grad():
        texts = encode_text_list(model, tokenizer, ev.texts, cfg.max_txt_l)
        videos = encode_media(model, ev.media, cfg, model.config.vision.image_size, progress=False)
        s = rerank(model, texts, videos, k_test=cfg.k_test, ensemble="concat")
    assert got["reranked"] == retrieval_metrics(s.v2t_x, s.t2v_x, ev.text_to_media, ev.media_to_text)
    assert got["dual_encoder"] == retrieval_metrics(s.v2t_emb, s.t2v_emb, ev.text_to_media, ev.media_to_text)
    # the .pth's architecture is read from its weights: the tiny sizes of the reference
    loaded = load_any(root / "ckpt_best.pth", task="retrieval")
    assert loaded.config.vision.image_size == ref_meta["tiny_pretrain"]["config"]["image_res"]
