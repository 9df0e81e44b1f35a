"""Behaviour of the tiny presets: shapes, gradients, determinism, attention paths, save/load, HF init."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BeitConfig, BeitModel

from singularity_vl.checkpoint.hf_init import init_from_hf, minilm_dir, read_hf_weights
from singularity_vl.models import losses
from singularity_vl.models.config import SingularityConfig, preset, tiny_config
from singularity_vl.models.fusion_bert import BertSelfAttention, KVSegments
from singularity_vl.models.singularity import SingularityBase, SingularityQA, create_model

B, L = 3, 8


def _batch(cfg: SingularityConfig, frames: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    res = cfg.vision.image_size
    video = torch.randn(B, frames, 3, res, res, generator=g)
    ids = torch.randint(1000, 5000, (B, L), generator=g)
    ids[:, 0] = cfg.text.cls_token_id
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return video, ids, mask


def _unused(model, cfg) -> set[str]:
    unused = set()
    if not cfg.temporal.add_temporal_embed:
        unused.add("temporal_embeddings")
    return unused


@pytest.mark.parametrize("task", ["pretrain", "retrieval"])
@pytest.mark.parametrize("temporal", [False, True])
def test_retrieval_models_train(task, temporal):
    cfg = tiny_config(task, temporal)
    model = create_model(cfg).train()
    video, ids, mask = _batch(cfg, frames=4 if temporal else 1)
    out = model(video, ids, mask, torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert out.itm_logits.shape == (3 * B, 2)
    assert torch.isfinite(out.loss)
    assert (out.loss_mlm is not None) == (task == "pretrain")
    out.loss.backward()
    for name, p in model.named_parameters():
        if name in _unused(model, cfg):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient for {name}"


def test_qa_model_trains_and_ranks():
    cfg = tiny_config("qa")
    model = create_model(cfg).train()
    assert isinstance(model, SingularityQA)
    video, q, qmask = _batch(cfg, frames=2)
    answers = torch.tensor([[101, 2417, 102, 0], [101, 2665, 102, 0], [101, 2417, 2665, 102]])
    amask = (answers != 0).long()
    loss = model(video, q, qmask, answers, amask, torch.tensor([1, 1, 1]), torch.tensor([1.0, 0.5, 1.0]))
    loss.backward()
    for name, p in model.named_parameters():
        if name in _unused(model, cfg):
            continue
        assert p.grad is not None, f"no gradient for {name}"
    model.eval()
    for ensemble in ("concat", "mean", "max", "lse"):
        ranking = model.rank_answers(video, q, qmask, answers, amask, k=2, ensemble=ensemble)
        assert ranking.topk_ids.shape == (B, 2)
        torch.testing.assert_close(ranking.topk_probs.sum(1), torch.ones(B))


def test_itm_negatives_deterministic_with_generator():
    cfg = tiny_config("retrieval")
    model = create_model(cfg).eval()
    video, ids, mask = _batch(cfg)
    vid = torch.tensor([0, 1, 1])
    a = model(video, ids, mask, vid, generator=torch.Generator().manual_seed(5))
    b = model(video, ids, mask, vid, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.itm_logits, b.itm_logits, rtol=0, atol=0)


def test_negatives_never_share_the_video_id():
    sim = torch.randn(4, 4)
    ids = torch.tensor([7, 7, 8, 9])
    w_t2v, w_v2t = losses.hard_negative_weights(sim, ids)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        neg_v, neg_t = losses.draw_negatives(w_t2v, w_v2t, g)
        assert (ids[neg_v] != ids).all() and (ids[neg_t] != ids).all()
    same = torch.tensor([1, 1, 1, 1])  # whole batch one video: no crash, never itself
    w_t2v, _ = losses.hard_negative_weights(sim, same)
    assert (w_t2v.diagonal() == 0).all() and (w_t2v.sum(1) > 0).all()


def test_itc_soft_targets():
    """Rows of the targets spread evenly over the texts of the same video; checked against the loss written
    out by hand on similarities where every entry matters."""
    sim = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, -1.0, 1.0]])

    def log_softmax_rows(m: list[list[float]]) -> list[list[float]]:
        return [[x - math.log(sum(math.exp(y) for y in row)) for x in row] for row in m]

    def cross_entropy(targets: list[list[float]], logits: list[list[float]]) -> float:
        logp = log_softmax_rows(logits)
        return -sum(targets[i][j] * logp[i][j] for i in range(3) for j in range(3)) / 3

    def loss(targets: list[list[float]]) -> float:
        return (cross_entropy(targets, sim.tolist()) + cross_entropy(targets, sim.t().tolist())) / 2

    hard = loss([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    soft = loss([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])  # items 0 and 1 show the same video
    assert abs(hard - soft) > 0.1
    assert losses.itc_loss(sim).item() == pytest.approx(hard, rel=1e-6)
    assert losses.itc_loss(sim, torch.tensor([7, 7, 9])).item() == pytest.approx(soft, rel=1e-6)
    assert losses.itc_loss(sim, torch.tensor([7, 8, 9])).item() == pytest.approx(hard, rel=1e-6)
    # the per-rank form (global batch) gives the same numbers on one rank
    ids = torch.tensor([7, 7, 9])
    rows = losses.itc_loss_rows(sim, sim.t(), ids, ids)
    assert rows.item() == pytest.approx(soft, rel=1e-6)


def test_frame_pooling():
    s = torch.tensor([[1.0, 3.0]])
    assert losses.pool_frames(s, "mean").item() == 2.0
    assert losses.pool_frames(s, "max").item() == 3.0
    assert losses.pool_frames(s, "lse").item() == pytest.approx(torch.logsumexp(s, -1).item())
    with pytest.raises(ValueError, match="ensemble"):
        losses.pool_frames(s, "median")


@pytest.mark.parametrize("temporal", [False, True])
def test_sdpa_and_eager_agree(temporal):
    cfg = tiny_config("pretrain", temporal)
    model = create_model(cfg).eval()
    video, ids, mask = _batch(cfg, frames=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        a = model(video, ids, mask, generator=g)
        model.set_attn_implementation("eager")
        b = model(video, ids, mask, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_same_gradients():
    cfg = tiny_config("retrieval")
    cfg.text.attention_dropout = cfg.text.hidden_dropout = 0.0  # deterministic training forward
    torch.manual_seed(0)
    model = create_model(cfg).train()
    video, ids, mask = _batch(cfg)
    negs = (torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1]))
    model(video, ids, mask, itm_negatives=negs).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(video, ids, mask, itm_negatives=negs).loss.backward()
    for n, p in model.named_parameters():
        if n in ref:
            torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6)


def test_save_and_load_roundtrip(tmp_path):
    cfg = tiny_config("qa", temporal=True)
    model = create_model(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again = SingularityBase.from_pretrained(tmp_path / "m").eval()
    assert again.config == cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="config.json"):
        SingularityBase.from_pretrained(tmp_path / "missing")


def test_beit_absolute_position_embeddings_option(tmp_path):
    """`vision.abs_pos_emb`: BEiT gets learned absolute position embeddings (used, saved, reloaded); the
    release's BEiT (the default) has none."""
    assert not any("position_embeddings" in k for k in create_model(tiny_config()).state_dict() if "vision" in k)
    cfg = tiny_config()
    cfg.vision.abs_pos_emb = True
    model = create_model(cfg).eval()
    key = "vision_encoder.embeddings.position_embeddings"
    grid = cfg.vision.image_size // cfg.vision.patch_size
    assert model.state_dict()[key].shape == (1, grid * grid + 1, cfg.vision.hidden_size)
    frame = torch.randn(1, 1, 3, cfg.vision.image_size, cfg.vision.image_size)
    with torch.no_grad():
        before = model.encode_frames(frame)[0]
        model.vision_encoder.embeddings.position_embeddings.normal_()
        after = model.encode_frames(frame)[0]
    assert not torch.allclose(before, after)
    model.save_pretrained(tmp_path / "m")
    again = SingularityBase.from_pretrained(tmp_path / "m").eval()
    assert again.config.vision.abs_pos_emb
    assert torch.equal(again.state_dict()[key], model.state_dict()[key])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'bogus'"):
        SingularityConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="fusion_layer"):
        SingularityConfig.from_dict({"text": {"fusion_layer": 0}})
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        SingularityConfig.load(bad)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_base_preset_sizes():
    with torch.device("meta"):
        model = create_model(preset("base", "retrieval"))
    n = sum(p.numel() for p in model.parameters())
    assert n == 202142915  # the release's retrieval model, official_state_dict_meta.json


def test_vit_backbone():
    cfg = tiny_config("retrieval")
    cfg.vision.backbone = "vit"
    model = create_model(cfg).eval()
    video, ids, mask = _batch(cfg, frames=2)
    with torch.no_grad():
        enc = model.encode_video(video)
    assert enc.tokens.shape == (B, 2 * 17, 64) and enc.pooled.shape == (B, 2, 64)


def test_init_from_local_hf_dirs(tmp_path):
    beit_dir = tmp_path / "beit"
    BeitModel(
        BeitConfig(
            hidden_size=384,
            num_hidden_layers=2,
            num_attention_heads=6,
            intermediate_size=512,
            image_size=32,
            use_mean_pooling=True,
            use_relative_position_bias=True,
            use_absolute_position_embeddings=False,
        )
    ).save_pretrained(beit_dir)
    model = init_from_hf(beit_dir, minilm_dir(), task="pretrain", embed_dim=64)
    assert model.config.text.num_layers == 6 and model.config.text.fusion_layer == 3
    minilm = read_hf_weights(minilm_dir())
    for i in range(6):  # text-only and fusion layers keep MiniLM's self-attention and FFN
        key = f"encoder.layer.{i}.attention.self.query.weight"
        assert torch.equal(model.text_encoder.state_dict()[key], minilm[key])
    hf_vision = BeitModel.from_pretrained(beit_dir).state_dict()
    assert torch.equal(
        model.vision_encoder.state_dict()["layers.1.mlp.fc1.weight"], hf_vision["layers.1.mlp.fc1.weight"]
    )
    qa = init_from_hf(
        None,
        minilm_dir(),
        config=model.config.__class__.from_dict(
            {
                **model.config.to_dict(),
                "task": "qa",
                "vision": {**model.config.to_dict()["vision"], "use_pooler": False},
            }
        ),
    )
    dec0 = qa.text_decoder.bert.state_dict()["encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(dec0, minilm["encoder.layer.3.attention.self.query.weight"])


def test_text_layer_map_reuses_bert_layers():
    """All six MiniLM layers text-only plus two fusion layers started from its last two (the demo's model)."""
    from singularity_vl.checkpoint.hf_init import text_config_from_hf

    text = text_config_from_hf(minilm_dir())
    text.fusion_layer, text.num_layers = 6, 8
    config = SingularityConfig(task="retrieval", vision=tiny_config().vision, text=text, embed_dim=32)
    model = init_from_hf(None, minilm_dir(), config=config, text_layer_map={**{i: i for i in range(6)}, 6: 4, 7: 5})
    minilm = read_hf_weights(minilm_dir())
    state = model.text_encoder.state_dict()
    for ours, bert in ((0, 0), (5, 5), (6, 4), (7, 5)):
        key = "encoder.layer.{}.output.dense.weight"
        assert torch.equal(state[key.format(ours)], minilm[key.format(bert)])
    with pytest.raises(KeyError, match="BERT weights missing"):
        init_from_hf(None, minilm_dir(), config=config, text_layer_map={i: i for i in range(6)})


def test_text_layer_map_none_keeps_fusion_layers_fresh():
    """Layers mapped to None keep their random init (the demo's fusion layers); the rest come from MiniLM."""
    from singularity_vl.checkpoint.hf_init import text_config_from_hf

    text = text_config_from_hf(minilm_dir())
    text.fusion_layer, text.num_layers = 6, 8
    config = SingularityConfig(task="retrieval", vision=tiny_config().vision, text=text, embed_dim=32)
    torch.manual_seed(0)
    random_init = create_model(config).text_encoder.state_dict()
    torch.manual_seed(0)
    model = init_from_hf(
        None, minilm_dir(), config=config, text_layer_map={**{i: i for i in range(6)}, 6: None, 7: None}
    )
    minilm = read_hf_weights(minilm_dir())
    state = model.text_encoder.state_dict()
    key = "encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(state[key.format(5)], minilm[key.format(5)])
    for fresh in (6, 7):
        assert torch.equal(state[key.format(fresh)], random_init[key.format(fresh)])
        assert not any(torch.equal(state[key.format(fresh)], minilm[key.format(b)]) for b in range(6))


def test_fast_losses_same_loss_and_gradients():
    """Sharing each video's cross-attention K/V and sparse MLM logits change no number."""
    cfg = tiny_config("pretrain")
    cfg.text.attention_dropout = cfg.text.hidden_dropout = 0.0
    torch.manual_seed(0)
    model = create_model(cfg).train()
    video, ids, mask = _batch(cfg)
    grads = []
    for fast in (False, True):
        model.config.fast_losses = fast
        model.zero_grad()
        out = model(video, ids, mask, generator=torch.Generator().manual_seed(3))
        out.loss.backward()
        grads.append(
            (out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert grads[0][1].keys() == grads[1][1].keys()
    for name in grads[0][1]:
        torch.testing.assert_close(grads[0][1][name], grads[1][1][name], rtol=1e-4, atol=1e-6)


def test_match_logits_cls_only_equals_full_last_layer():
    """ITM's [CLS]-only last fusion layer gives the full layer's logits: padded texts, cached K/V, one
    video's K/V shared by several texts, and a causal-free batch of one."""
    cfg = tiny_config("retrieval")
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    video, ids, mask = _batch(cfg, frames=2)
    with torch.no_grad():
        tokens, _ = model.encode_text(ids, mask)
        vt = model.encode_video(video).tokens
        full = model.match_logits(tokens, mask, vt, cls_only=False)
        torch.testing.assert_close(model.match_logits(tokens, mask, vt), full, rtol=1e-5, atol=1e-6)
        kvs = model.cross_kvs(vt)
        torch.testing.assert_close(model.match_logits(tokens, mask, cross_kvs=kvs), full, rtol=1e-5, atol=1e-6)
        one = model.cross_kvs(vt[:1])
        shared = model.match_logits(tokens, mask, cross_kvs=one)
        torch.testing.assert_close(shared, model.match_logits(tokens, mask, vt[:1].expand_as(vt), cls_only=False))
        torch.testing.assert_close(model.match_logits(tokens[:1], mask[:1], vt[:1]), full[:1], rtol=1e-5, atol=1e-6)
        t6, m6 = tokens.repeat(2, 1, 1), mask.repeat(2, 1)  # 2 videos' K/V, each serving 3 consecutive texts
        grouped = model.match_logits(t6, m6, cross_kvs=model.cross_kvs(vt[:2]))
        torch.testing.assert_close(grouped, model.match_logits(t6, m6, vt[:2].repeat_interleave(B, 0)))
    assert not torch.allclose(full[0], full[1])  # the rows differ: the comparison is not vacuous


@pytest.mark.parametrize("fusion_layers", [1, 2])
def test_match_logits_from_cached_first_self_attention(fusion_layers):
    """Re-ranking's per-text cache: the first fusion layer's self-attention computed once per text
    (`first_self_attention`, then `self_attended=True`) gives the same logits, padded texts included,
    with and without the [CLS]-only last layer, also when the first fusion layer is the last one."""
    cfg = tiny_config("retrieval")
    cfg.text.fusion_layer = cfg.text.num_layers - fusion_layers
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    video, ids, mask = _batch(cfg, frames=2)
    assert not bool(mask.all())
    with torch.no_grad():
        tokens, _ = model.encode_text(ids, mask)
        vt = model.encode_video(video).tokens
        attended = model.text_encoder.first_self_attention(tokens, mask)
        for cls_only in (True, False):
            ref = model.match_logits(tokens, mask, vt, cls_only=cls_only)
            got = model.match_logits(attended, mask, vt, cls_only=cls_only, self_attended=True)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        kvs = model.cross_kvs(vt)
        got = model.match_logits(attended, mask, cross_kvs=kvs, self_attended=True)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        # the flag matters: attended tokens read as plain text tokens give other logits
        assert not torch.allclose(model.match_logits(attended, mask, vt), ref, atol=1e-4)


@pytest.mark.parametrize("native", [True, False], ids=["bf16_cpu", "avx2_cpu"])
def test_auto_precision_follows_hardware(monkeypatch, native):
    from singularity_vl.models import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    # given the model's width, small models stay in fp32 on CPU (too narrow to pay for the casts); base not
    tiny, base = create_model(tiny_config("pretrain")), preset("base", "pretrain")
    assert precision.model_width(tiny) == 64 and precision.model_width(base) == 768
    assert precision.resolve_precision("auto", "cpu", precision.model_width(tiny)) == "fp32"
    assert precision.resolve_precision("auto", "cpu", precision.model_width(base)) == ("bf16" if native else "fp32")
    assert precision.resolve_precision("bf16", "cpu", precision.model_width(tiny)) == "bf16"  # asked for
    assert precision.autocast("auto", "cpu", width=768).__class__.__name__ == ("autocast" if native else "nullcontext")


def test_native_bf16_detection_reads_the_cpu_flags():
    """AMX tiles or AVX512-BF16 in /proc/cpuinfo (Linux) is what makes bf16 native on CPU."""
    from pathlib import Path

    from singularity_vl.models import precision

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert precision.cpu_has_native_bf16() == bool(flags & {"amx_tile", "avx512_bf16"})


def test_add_temporal_modules_for_second_stage():
    from singularity_vl.models.singularity import add_temporal_modules

    single = create_model(tiny_config("pretrain")).eval()
    with torch.no_grad():
        single.temporal_embeddings.fill_(0.3)
    temporal = add_temporal_modules(single, num_frames=4, num_layers=2).eval()
    assert temporal.config.temporal.enable_encoder and temporal.temporal_embeddings.shape[1] == 4
    assert torch.equal(temporal.temporal_embeddings[:, :1], single.temporal_embeddings)
    assert torch.count_nonzero(temporal.temporal_embeddings[:, 1:]) == 0
    assert torch.equal(temporal.itm_head.weight, single.itm_head.weight)
    assert temporal.mlm_head.decoder.weight is temporal.text_encoder.embeddings.word_embeddings.weight
    video, ids, mask = _batch(temporal.config, frames=4)
    with torch.no_grad():
        assert temporal.encode_video(video).tokens.shape == (B, 4 * 17, 64)
    torch.manual_seed(0)
    spread = add_temporal_modules(single, num_frames=4, num_layers=2, embed_init_std=1.0)
    assert torch.equal(spread.temporal_embeddings[:, :1], single.temporal_embeddings)  # trained slot kept
    assert 0.8 < spread.temporal_embeddings[:, 1:].std().item() < 1.2


def test_text_encoder_uses_bert_init():
    model = create_model(tiny_config("retrieval"))
    w = model.text_encoder.encoder.layer[2].crossattention.self.key.weight
    assert abs(w.std().item() - 0.02) < 0.005
    assert torch.count_nonzero(model.text_encoder.encoder.layer[0].attention.self.query.bias) == 0


def test_update_pooler_embed_feeds_temporal_cls_to_itc():
    """Off (release default): pooled features never see the temporal modules. On: each frame's CLS after
    the temporal encoder replaces them, so the dual encoder depends on frame order."""
    torch.manual_seed(0)
    base = create_model(tiny_config("retrieval", temporal=True)).eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        off = base.encode_video(video)
        frame_tokens, pooled = base.encode_frames(video)
        torch.testing.assert_close(off.pooled, pooled)
        config = SingularityConfig.from_dict({**base.config.to_dict()})
        config.temporal.update_pooler_embed = True
        on_model = create_model(config).eval()
        base.temporal_embeddings.normal_()  # zeros at init would make frame order invisible
        off = base.encode_video(video)
        on_model.load_state_dict(base.state_dict())
        on = on_model.encode_video(video)
        torch.testing.assert_close(on.tokens, off.tokens)
        torch.testing.assert_close(on.pooled, on.tokens.view(2, 4, -1, on.tokens.shape[-1])[:, :, 0])
        flipped = on_model.encode_video(video.flip(1))
        assert not torch.allclose(
            on_model.video_features(flipped.pooled).mean(1), on_model.video_features(on.pooled).mean(1)
        )
        single = on_model.encode_video(video[:, :1])  # one frame: no temporal encoder, BEiT's pooled vector
        torch.testing.assert_close(single.pooled, pooled[:, :1])


def test_padding_to_longest_same_losses_and_gradients():
    """Training on texts padded to the batch's longest (our default) gives the release's losses and
    gradients from texts padded to max_txt_l, given the same MLM draws on the real positions."""
    cfg = tiny_config("pretrain")
    cfg.text.attention_dropout = cfg.text.hidden_dropout = 0.0
    torch.manual_seed(0)
    model = create_model(cfg).train()
    video, ids, mask = _batch(cfg)
    ids[:, 6:], mask[:, 6:] = 0, 0  # longest text: 6 tokens of 8
    draws = losses.draw_mask(ids.shape, cfg.text.vocab_size, cfg.mlm_prob, torch.Generator().manual_seed(1))
    short = losses.MaskDraws(*(getattr(draws, f)[:, :6] for f in ("mask", "replace", "random", "random_words")))
    results = []
    for i, m, d in ((ids, mask, draws), (ids[:, :6], mask[:, :6], short)):
        model.zero_grad()
        out = model(video, i, m, generator=torch.Generator().manual_seed(3), mlm_draws=d)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss_itc.detach(), out.loss_itm.detach(), out.loss_mlm.detach(), grads))
    for a, b in zip(results[0][:3], results[1][:3], strict=True):
        torch.testing.assert_close(a, b)
    for name, grad in results[0][3].items():
        torch.testing.assert_close(grad, results[1][3][name], rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_kv_segments_equal_explicit_keys_values(impl):
    """Query rows served by K/V segments (two texts per video in place, then gathered negative videos)
    get the outputs and K/V gradients of the same K/V copied out row by row; mismatched rows are refused."""
    cfg = tiny_config("retrieval").text
    torch.manual_seed(0)
    attn = BertSelfAttention(cfg, kv_width=24, attn_implementation=impl).eval()  # no attention dropout
    heads, hd = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    b, lq, lk = 3, 5, 7
    queries = torch.randn(3 * b, lq, cfg.hidden_size)
    k0, v0 = torch.randn(b, heads, lk, hd), torch.randn(b, heads, lk, hd)
    neg = torch.tensor([2, 0, 0])
    results = []
    for segmented in (True, False):
        k, v = k0.clone().requires_grad_(), v0.clone().requires_grad_()
        if segmented:
            kv = KVSegments([(k, v, 2 * b), (k.index_select(0, neg), v.index_select(0, neg), b)])
        else:
            rows = torch.cat([torch.arange(b).repeat_interleave(2), neg])
            kv = (k[rows], v[rows])
        out = attn(queries, kv=kv)
        out.square().sum().backward()
        results.append((out, k.grad, v.grad))
    for got, want in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="add up"):
        attn(queries, kv=KVSegments([(k0, v0, 2 * b)]))


def test_itm_reversed_negatives():
    """Each text against its own video played backwards is one more ITM negative (fast and release
    loss paths agree); a 1-frame video has no reverse, so nothing is added."""
    cfg = tiny_config("retrieval", temporal=True)
    cfg.text.attention_dropout = cfg.text.hidden_dropout = 0.0
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    video, ids, mask = _batch(cfg, frames=4)
    negatives = (torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1]))
    outs = []
    for fast in (True, False):
        model.config.fast_losses = fast
        outs.append(model(video, ids, mask, itm_negatives=negatives, itm_reversed_negatives=True))
    assert outs[0].itm_logits.shape == (4 * B, 2)
    torch.testing.assert_close(outs[0].itm_logits, outs[1].itm_logits, rtol=1e-4, atol=1e-5)
    text_tokens, _ = model.encode_text(ids, mask)
    reversed_video = model.encode_video(video.flip(1)).tokens
    torch.testing.assert_close(
        outs[0].itm_logits[3 * B :], model.match_logits(text_tokens, mask, reversed_video), rtol=1e-4, atol=1e-5
    )
    labels = torch.tensor([1] * B + [0] * 3 * B)
    torch.testing.assert_close(outs[0].loss_itm, torch.nn.functional.cross_entropy(outs[0].itm_logits, labels))
    plain = model(video, ids, mask, itm_negatives=negatives)
    torch.testing.assert_close(outs[0].itm_logits[: 3 * B], plain.itm_logits, rtol=1e-4, atol=1e-5)
    one_frame = model(video[:, :1], ids, mask, itm_negatives=negatives, itm_reversed_negatives=True)
    assert one_frame.itm_logits.shape == (3 * B, 2)
