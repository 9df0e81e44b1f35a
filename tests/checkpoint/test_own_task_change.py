"""Our own model directory loaded for another task (`load_any(dir, task=...)`, as `evaluate --checkpoint` and
fine-tuning from our pre-training do) keeps the config it was saved with: only the task heads change, and the
same texts and videos score exactly as before."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from singularity_vl.checkpoint.release import load_any
from singularity_vl.eval.retrieval import encode_texts, encode_videos, rerank
from singularity_vl.models.config import SingularityConfig, TemporalConfig, TextConfig, VisionConfig
from singularity_vl.models.singularity import SingularityBase, create_model


def _config() -> SingularityConfig:
    """Widths and head counts that weights alone do not reveal: vision 128 wide with 4 heads, text 384 wide
    with 12 heads (a release-style guess gives 384 // 64 = 6), absolute position embeddings in BEiT, and a
    temporal encoder over 4 frames."""
    return SingularityConfig(
        task="pretrain",
        vision=VisionConfig(
            image_size=32,
            hidden_size=128,
            num_layers=2,
            num_heads=4,
            intermediate_size=256,
            drop_path_rate=0.0,
            abs_pos_emb=True,
        ),
        text=TextConfig(
            vocab_size=512, hidden_size=384, num_layers=3, num_heads=12, intermediate_size=512, fusion_layer=2
        ),
        temporal=TemporalConfig(num_frames=4, add_temporal_embed=True, enable_encoder=True, num_layers=1),
        embed_dim=48,
        temp=0.05,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(_config()).eval()
    with torch.no_grad():  # weights the init leaves at zero or constant would hide a lost tensor
        for name, p in model.named_parameters():
            if "position_embeddings" in name or "temporal_embeddings" in name:
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("own") / "pretrain"
    model.save_pretrained(path)
    return path, model


def _inputs():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(3, 4, 3, 32, 32, generator=g)
    ids = torch.randint(200, 512, (5, 7), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[3:, 5:] = 0
    return video, ids, mask


def _without(cfg: SingularityConfig, *fields: str) -> dict:
    data = dataclasses.asdict(cfg)
    for f in fields:
        section, _, key = f.rpartition(".")
        (data[section] if section else data).pop(key)
    return data


@torch.no_grad()
def test_retrieval_from_our_pretraining_scores_identically(saved):
    path, original = saved
    model = load_any(path, task="retrieval").eval()
    assert model.config.task == "retrieval"
    assert _without(model.config, "task") == _without(original.config, "task")
    assert model.config.text.num_heads == 12 and model.config.vision.abs_pos_emb
    assert not any(k.startswith("mlm_head.") for k in model.state_dict())
    video, ids, mask = _inputs()
    scores = []
    for m in (original, model):
        texts, videos = encode_texts(m, ids, mask), encode_videos(m, video)
        scores.append(rerank(m, texts, videos, k_test=2, ensemble="concat"))
    for field in ("v2t_emb", "t2v_emb", "v2t_x", "t2v_x"):
        assert torch.equal(getattr(scores[0], field), getattr(scores[1], field)), field
    assert (scores[1].t2v_x > -100).sum() == 5 * 2  # re-ranking really ran for every text


@torch.no_grad()
def test_qa_from_our_pretraining_keeps_the_encoders(saved):
    path, original = saved
    with pytest.warns(UserWarning, match="key/value projections start from a fresh init"):
        qa = load_any(path, task="qa").eval()
    cfg = qa.config
    assert cfg.task == "qa" and cfg.decoder_num_layers == 1 and not cfg.vision.use_pooler
    keep = ("task", "decoder_num_layers", "vision.use_pooler")
    assert _without(cfg, *keep) == _without(original.config, *keep)
    video, ids, mask = _inputs()
    tokens = qa.encode_video(video[:1].expand(5, -1, -1, -1, -1)).tokens
    torch.testing.assert_close(
        tokens, original.encode_video(video[:1].expand(5, -1, -1, -1, -1)).tokens, rtol=0, atol=0
    )
    states = qa.encode_question(tokens, ids, mask)
    expected = original.text_encoder(ids, mask, encoder_hidden_states=tokens, mode="multi_modal")
    torch.testing.assert_close(states, expected, rtol=0, atol=0)
    # the answer decoder starts from the fusion layer and the MLM head, as the release's conversion does (but
    # for the cross-attention key/value, which read 384-wide question states, not 128-wide video tokens)
    fusion = original.config.text.fusion_layer
    src = original.text_encoder.encoder.layer[fusion].crossattention.self.query.weight
    assert torch.equal(qa.text_decoder.bert.encoder.layer[0].crossattention.self.query.weight, src)
    assert torch.equal(qa.text_decoder.lm_head.transform.dense.weight, original.mlm_head.transform.dense.weight)


def test_conversions_that_would_lose_weights_are_refused(saved, tmp_path):
    path, original = saved
    retrieval = load_any(path, task="retrieval")
    retrieval.save_pretrained(tmp_path / "ret")
    with pytest.raises(ValueError, match=r"ret.*cannot convert a retrieval model to qa"):
        load_any(tmp_path / "ret", task="qa")
    with pytest.raises(ValueError, match="12 text heads"):
        load_any(path, task="retrieval", text_heads=6)
    same = load_any(path)
    assert isinstance(same, SingularityBase) and same.config == original.config


def test_evaluate_cli_on_our_pretraining_scores_as_the_model_itself(saved, tmp_path, capsys):
    """`singularity-vl evaluate --checkpoint <pre-training dir>` (task retrieval) gives the metrics of the
    saved model evaluated directly: the conversion changes no number."""
    from singularity_vl.cli import main
    from singularity_vl.data.video_writer import moving_square_frames, write_video
    from singularity_vl.eval.run import EvalConfig, evaluate

    path, original = saved
    words = ["red", "green", "blue", "square", "circle", "moves", "left", "right", "a", "the", "stops"]
    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + words + [f"[unused{i}]" for i in range(99, 99 + 512 - len(specials) - len(words))]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    captions = ["a red square moves left", "the blue circle stops", "a green square moves right"]
    for i in range(3):
        write_video(tmp_path / f"v{i}.mp4", moving_square_frames(8, 40, 40, seed=i), fps=8, gop=4)
    (tmp_path / "test.json").write_text(
        json.dumps([{"video": f"v{i}.mp4", "caption": c} for i, c in enumerate(captions)])
    )
    settings = dict(
        test_file=[str(tmp_path / "test.json"), str(tmp_path), "video"],
        k_test=2,
        num_frames_test=4,
        max_txt_l=8,
        tokenizer=str(tmp_path / "vocab.txt"),
    )
    direct = evaluate(original.eval(), EvalConfig(**settings), None)
    overrides = [f"{k}={v}" if not isinstance(v, list) else f"{k}=[{','.join(v)}]" for k, v in settings.items()]
    assert main(["evaluate", "--checkpoint", str(path), "--out", str(tmp_path / "out"), *overrides]) == 0
    via_cli = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert via_cli["reranked"] == direct["reranked"] and via_cli["dual_encoder"] == direct["dual_encoder"]
