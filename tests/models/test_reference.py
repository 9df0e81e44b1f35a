"""Equivalence with tensors computed by the original release (see tests/reference/README.md).

Every size, frame count and text length comes from the reference set's `meta.json`, so another set in the
same format runs through the same tests (`SINGULARITY_REFERENCE_DIR`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from singularity_vl.checkpoint.release import load_release_state
from singularity_vl.models import losses

pytestmark = pytest.mark.reference
SHIPPED = Path(__file__).resolve().parents[1] / "reference"
close = partial(torch.testing.assert_close, rtol=1e-4, atol=1e-5)
CASES = ["tiny_pretrain", "tiny_pretrain_temporal"]


def test_reference_files_are_intact(ref_dir):
    """Every file the set's SHA256SUMS lists is present and unchanged (a set without the list is taken as is)."""
    import hashlib

    sums = ref_dir / "SHA256SUMS"
    if not sums.is_file():
        assert ref_dir.resolve() != SHIPPED, "the shipped reference set lost its SHA256SUMS"
        return
    listed = [line.split() for line in sums.read_text().splitlines() if line.strip()]
    assert {name for _, name in listed} >= {"meta.json", "tiny_pretrain.weights.safetensors", "tiny_qa.io.safetensors"}
    for digest, name in listed:
        assert hashlib.sha256((ref_dir / name).read_bytes()).hexdigest() == digest, f"{ref_dir / name} changed"


def _model(ref_dir, name: str, attn: str = "sdpa"):
    state = load_file(str(ref_dir / f"{name}.weights.safetensors"))
    model, _ = load_release_state(state, attn_implementation=attn)
    return model.eval()


@pytest.fixture(scope="module", params=CASES)
def case(request, ref_dir):
    name = request.param
    io = load_file(str(ref_dir / f"{name}.io.safetensors"))
    return name, _model(ref_dir, name), io


def test_sizes_come_from_meta(case, ref_meta):
    name, model, io = case
    sizes = ref_meta["sizes"]
    assert model.config.vision.hidden_size == sizes["hidden"]
    assert model.config.text.fusion_layer == sizes["fusion_layer"]
    assert model.config.embed_dim == sizes["embed_dim"]
    assert tuple(io["video"].shape[:2]) == (sizes["B"], sizes["T"])
    assert io["input_ids"].shape[1] == ref_meta[name]["config"]["max_txt_l"]


@torch.no_grad()
def test_vision(case):
    _, model, io = case
    frame_tokens, frame_pooled = model.encode_frames(io["video"])
    close(frame_tokens, io["frame_embeds"])
    close(frame_pooled, io["frame_pooled_embeds"])
    enc = model.encode_video(io["video"])
    close(enc.tokens, io["image_embeds"])
    close(enc.pooled, io["pooled_image_embeds"])
    for t in (1, 2, 6):
        key = f"image_embeds_T{t}"
        if key in io:
            video = io["video_T6"] if t == 6 else io["video"][:, :t]
            enc_t = model.encode_video(video)
            close(enc_t.tokens, io[key])
            close(enc_t.pooled, io[f"pooled_image_embeds_T{t}"])


@torch.no_grad()
def test_text_and_itc(case):
    _, model, io = case
    tokens, cls = model.encode_text(io["input_ids"], io["attention_mask"])
    close(tokens, io["text_embeds"])
    close(cls, io["pooled_text_embeds"])
    enc = model.encode_video(io["video"])
    video_feat = model.video_features(enc.pooled)
    text_feat = model.text_features(cls)
    close(video_feat, io["image_feat"])
    close(text_feat, io["text_feat"])
    sim = model.similarity(video_feat, text_feat) / model.temp
    close(sim, io["sim_i2t"])
    close(losses.itc_loss(sim, io["idx"]), io["itc_loss"])
    close(losses.itc_loss(sim, None), io["itc_loss_noidx"])
    pooled_t1 = model.encode_video(io["video"][:, :1]).pooled
    close(model.similarity(model.video_features(pooled_t1), text_feat) / model.temp, io["sim_i2t_T1"])
    w_t2v, w_v2t = losses.hard_negative_weights(sim, io["idx"])
    close(w_t2v, io["itm_hardneg_weights_t2i"])
    close(w_v2t, io["itm_hardneg_weights_i2t"])


@torch.no_grad()
def test_itm_and_mlm(case):
    _, model, io = case
    enc = model.encode_video(io["video"])
    text_tokens, cls = model.encode_text(io["input_ids"], io["attention_mask"])
    sim = model.similarity(model.video_features(enc.pooled), model.text_features(cls)) / model.temp
    negatives = (io["itm_img_neg_idx"], io["itm_txt_neg_idx"])
    loss, logits = model.itm_loss(sim, text_tokens, io["attention_mask"], enc.tokens, io["idx"], negatives=negatives)
    close(logits, io["itm_logits"])
    close(loss, io["itm_loss"])
    mlm_logits = model.mlm_logits(io["mlm_input_ids"], io["attention_mask"], enc.tokens)
    close(mlm_logits, io["mlm_logits"])
    mlm_loss = torch.nn.functional.cross_entropy(mlm_logits.view(-1, mlm_logits.shape[-1]), io["mlm_labels"].view(-1))
    close(mlm_loss, io["mlm_loss"])


def test_mlm_masking_matches_release(case):
    _, model, io = case
    draws = losses.MaskDraws(
        io["fwd_mlm_raw_mask"].bool(),
        io["fwd_mlm_raw_replace"].bool(),
        io["fwd_mlm_raw_random"].bool(),
        io["fwd_mlm_random_words"],
    )
    masked, labels = losses.mask_tokens(io["input_ids"], draws)
    assert torch.equal(masked, io["fwd_mlm_input_ids"])
    assert torch.equal(labels, io["fwd_mlm_labels"])


@torch.no_grad()
@pytest.mark.parametrize("fast", [True, False], ids=["fast_losses", "release_procedure"])
@pytest.mark.parametrize("frames", ["fwd", "fwdT4"])
def test_training_forward(case, frames, fast):
    _, model, io = case
    model.config.fast_losses = fast
    video = io["video"][:, :1] if frames == "fwd" else io["video"]
    draws = losses.MaskDraws(
        io["fwd_mlm_raw_mask"].bool(),
        io["fwd_mlm_raw_replace"].bool(),
        io["fwd_mlm_raw_random"].bool(),
        io["fwd_mlm_random_words"],
    )
    out = model(
        video,
        io["input_ids"],
        io["attention_mask"],
        io["idx"],
        itm_negatives=(io["itm_img_neg_idx"], io["itm_txt_neg_idx"]),
        mlm_draws=draws,
    )
    close(out.loss_itc, io[f"{frames}_loss_ita"])
    close(out.loss_itm, io[f"{frames}_loss_itm"])
    close(out.loss_mlm, io[f"{frames}_loss_mlm"])
    close(out.loss, io[f"{frames}_total_loss"])
    close(out.itm_logits, io[f"{frames}_itm_logits"])


@torch.no_grad()
def test_eager_path_matches_too(ref_dir):
    """The explicit-softmax attention path (the benchmark's baseline) computes the same numbers."""
    io = load_file(str(ref_dir / "tiny_pretrain_temporal.io.safetensors"))
    model = _model(ref_dir, "tiny_pretrain_temporal", attn="eager")
    enc = model.encode_video(io["video"])
    close(enc.tokens, io["image_embeds"])
    close(model.mlm_logits(io["mlm_input_ids"], io["attention_mask"], enc.tokens), io["mlm_logits"])


@pytest.fixture(scope="module")
def qa(ref_dir):
    return _model(ref_dir, "tiny_qa"), load_file(str(ref_dir / "tiny_qa.io.safetensors"))


@torch.no_grad()
def test_qa_states_and_loss(qa):
    model, io = qa
    enc = model.encode_video(io["video"])
    close(enc.tokens, io["image_embeds"])
    states = model.encode_question(enc.tokens, io["q_input_ids"], io["q_attention_mask"])
    close(states, io["question_states"])
    per_answer = model.answer_losses(
        states, io["q_attention_mask"], io["train_answer_input_ids"], io["train_answer_attention_mask"], io["train_n"]
    )
    close(per_answer, io["train_answer_losses"])
    loss = model(
        io["video"],
        io["q_input_ids"],
        io["q_attention_mask"],
        io["train_answer_input_ids"],
        io["train_answer_attention_mask"],
        io["train_n"],
        io["train_weights"],
    )
    close(loss, io["train_loss"])


@torch.no_grad()
@pytest.mark.parametrize("ensemble", ["concat", "mean", "max", "lse"])
def test_qa_answer_ranking(qa, ref_meta, ensemble):
    model, io = qa
    k = ref_meta["tiny_qa"]["k"]
    ranking = model.rank_answers(
        io["video"],
        io["q_input_ids"],
        io["q_attention_mask"],
        io["answer_input_ids"],
        io["answer_attention_mask"],
        k=k,
        ensemble=ensemble,
    )
    assert torch.equal(ranking.topk_ids, io[f"rank_{ensemble}_topk_ids"])
    close(ranking.topk_probs, io[f"rank_{ensemble}_topk_probs"])
    if ensemble == "concat":
        close(ranking.first_token_probs, io["rank_concat_first_token_probs"])
        assert torch.equal(ranking.stage1_topk_ids, io["rank_concat_stage1_topk_ids"])
        close(ranking.candidate_loss, io["rank_concat_candidate_answer_loss"])
    answers = ref_meta["tiny_qa"]["answer_list"]
    ranked = [[answers[i] for i in row] for row in ranking.topk_ids.tolist()]
    assert ranked == ref_meta["qa_ranked_answers"][ensemble]


@torch.no_grad()
@pytest.mark.parametrize("name", CASES)
def test_retrieval_evaluation(ref_dir, ref_meta, name):
    """Dual-encoder and re-ranked score matrices and the metrics dict, for every ensemble in the set."""
    from singularity_vl.eval.metrics import retrieval_metrics
    from singularity_vl.eval.retrieval import encode_texts, encode_videos, rerank, rerank_release_procedure

    io = load_file(str(ref_dir / f"{name}.io.safetensors"))
    meta = ref_meta[name]
    model = _model(ref_dir, name.replace("pretrain", "retrieval"))
    texts = encode_texts(model, io["eval_input_ids"], io["eval_attention_mask"])
    videos = encode_videos(model, io["video"])
    strategies = [s for s in ("concat", "mean", "max", "lse") if f"eval_{s}_i2t_x" in io]
    assert strategies == list(meta["eval_metrics"])
    for s, fn in [(s, fn) for s in strategies for fn in (rerank_release_procedure, rerank)]:
        scores = fn(model, texts, videos, k_test=meta["config"]["k_test"], ensemble=s)
        close(scores.v2t_emb, io[f"eval_{s}_i2t_emb"])
        close(scores.t2v_emb, io[f"eval_{s}_t2i_emb"])
        close(scores.v2t_x, io[f"eval_{s}_i2t_x"])
        close(scores.t2v_x, io[f"eval_{s}_t2i_x"])
        t2v, v2t = meta["eval_txt2img"], meta["eval_img2txt"]
        assert retrieval_metrics(scores.v2t_x, scores.t2v_x, t2v, v2t) == meta["eval_metrics"][s]["x"]
        assert retrieval_metrics(scores.v2t_emb, scores.t2v_emb, t2v, v2t) == meta["eval_metrics"][s]["emb"]
