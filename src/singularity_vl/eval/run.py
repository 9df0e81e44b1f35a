"""`singularity-vl evaluate`: a test set from its annotation file, a model directory or release `.pth`,
metrics JSON plus per-query ranks or per-question predictions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from singularity_vl.configs import evaluation_view, resolve_config
from singularity_vl.data.annotations import load_answer_list, load_mc, load_qa, load_retrieval_eval
from singularity_vl.data.datasets import MediaEvalDataset, media_collate
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.transforms import EvalTransform
from singularity_vl.devices import auto_num_workers, model_device, to_device
from singularity_vl.distributed import gather_objects, gather_strided, is_main, my_share, rank_world, sum_int
from singularity_vl.eval.mc import mc_accuracy, mc_scores
from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.qa import decode_answer, greedy_answers, make_prediction, predictions_to_json, qa_metrics
from singularity_vl.eval.retrieval import EncodedTexts, EncodedVideos, encode_texts, encode_videos, rerank
from singularity_vl.models.precision import autocast, resolve_precision


class EvalDataError(ValueError):
    """The test set cannot be evaluated as given (e.g. unreadable test videos)."""


@dataclass
class EvalConfig:
    """What to evaluate and how (YAML, overridable with dotted `key=value` arguments)."""

    task: str = "retrieval"  # retrieval | mc | qa
    test_file: list[str] = field(default_factory=list)  # [annotation.json, media root, "video"|"image"]
    answer_list: str | None = None  # QA: JSON list of candidate answers
    qa_generate: bool = False  # QA: greedy open-ended generation instead of answer-list ranking
    qa_metric: str = "exact"  # QA: exact (answer string equal: MSRVTT-QA, ActivityNet-QA) | vqa (VQA accuracy)
    num_frames_test: int = 4  # frames per test video (release: 4 pre-train eval, 12 MSRVTT, 32 ActivityNet)
    sample_type_test: str = "middle"
    eval_frame_ensemble: str = "concat"  # concat | mean | max | lse
    k_test: int = 128  # candidates re-ranked per query (retrieval) / answers ranked (QA)
    max_txt_l: int = 32
    max_q_len: int = 25
    max_a_len: int = 5
    multi_video_gt: bool = False  # SSv2: several videos per caption
    paragraph: bool = False  # DiDeMo, ActivityNet: a video's captions joined into one query
    image_res: int | None = None  # default: the model's image size
    batch_size: int = 16
    num_workers: Any = "auto"  # data-loader workers: auto (sized from the machine and device) or a count
    tokenizer: str | None = None  # vocab.txt or tokenizer directory; default: the bundled bert-base-uncased
    # auto: bf16 (fp16 where bf16 is missing) autocast on a GPU, as the release evaluates in fp16; fp32 on
    # the CPU, where it gives the release's fp32 numbers exactly
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    # encoded videos' frame tokens are stored once, in this dtype (auto: the compute dtype)...
    eval_store_dtype: str = "auto"  # auto | fp32 | bf16 | fp16
    # ...and on the CPU instead of the GPU when true (the release's `eval_offload`); re-ranking streams
    # each video's tokens to the device
    eval_offload: bool = False


def load_eval_config(path: str | Path | None, overrides: list[str] = ()) -> EvalConfig:
    base = OmegaConf.structured(EvalConfig)
    if path is not None:
        path = resolve_config(path)
        try:
            base = OmegaConf.merge(base, evaluation_view(OmegaConf.load(path)))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"overrides must be key=value, got {bad}")
        try:
            base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"override: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    try:
        cfg = OmegaConf.to_object(base)
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors (missing env var, bad type) -> one clear line
        raise ValueError(f"{path or 'config'}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if cfg.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {cfg.precision!r}")
    if cfg.eval_store_dtype not in STORE_DTYPES:
        raise ValueError(f"eval_store_dtype must be one of {sorted(STORE_DTYPES)}, got {cfg.eval_store_dtype!r}")
    auto_num_workers("cpu", cfg.num_workers)  # validates
    if cfg.task not in ("retrieval", "mc", "qa"):
        raise ValueError(f"task must be retrieval, mc or qa, got {cfg.task!r}")
    if not cfg.test_file:
        raise ValueError("test_file is required: [annotation.json, media root, 'video'|'image']")
    return cfg


STORE_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def eval_precision(cfg: EvalConfig, device: torch.device) -> str:
    """The precision evaluation computes in (`auto`: bf16/fp16 on a GPU, fp32 on the CPU)."""
    if cfg.precision != "auto":
        return cfg.precision
    return resolve_precision("auto", device) if device.type == "cuda" else "fp32"


def store_dtype(cfg: EvalConfig, device: torch.device) -> torch.dtype:
    """The dtype encoded frame tokens are kept in (`auto`: the compute dtype)."""
    return STORE_DTYPES[cfg.eval_store_dtype] or STORE_DTYPES[eval_precision(cfg, device)]


def _media_loader(media: list, cfg: EvalConfig, image_res: int, device: torch.device) -> DataLoader:
    """Test frames of `media`, batched (unreadable items come back counted in `batch["skipped"]`)."""
    ds = MediaEvalDataset(media, EvalTransform(image_res), cfg.num_frames_test, cfg.sample_type_test)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        collate_fn=media_collate,
        num_workers=auto_num_workers(device, cfg.num_workers),
        pin_memory=device.type == "cuda",
    )


def _check_readable(failed: int) -> None:
    """Raise on every rank alike when any rank met unreadable test media."""
    failed = sum_int(failed)
    if failed:
        raise EvalDataError(
            f"{failed} test video(s) could not be read (see the warnings above); evaluation needs every test video"
        )


def encode_media(model, media: list, cfg: EvalConfig, image_res: int, progress: bool = True) -> EncodedVideos:
    """Test frames of every item (`cfg.num_frames_test`, `cfg.sample_type_test`) through the vision side
    on the model's device, in the configured precision; frame tokens stored once in `eval_store_dtype`
    (on the CPU with `eval_offload`). Under torch.distributed each rank encodes and keeps its share of
    the items, and the features are gathered. An unreadable item is an `EvalDataError`."""
    device = model_device(model)
    mine = list(my_share(len(media)))
    dtype = store_dtype(cfg, device)
    store_device = torch.device("cpu") if cfg.eval_offload else device
    tokens: torch.Tensor | None = None  # (len(mine), T, L, D), allocated once and filled in place
    feats: torch.Tensor | None = None
    failed = 0
    loader = _media_loader([media[i] for i in mine], cfg, image_res, device)
    with autocast(eval_precision(cfg, device), device):
        for batch in tqdm(loader, desc="encoding videos", unit="batch", disable=not progress or not is_main()):
            failed += batch["skipped"]
            if not batch["size"]:
                continue
            enc = encode_videos(model, batch["video"], dtype, store_device)
            if tokens is None:
                tokens, feats = _allocate(len(mine), enc, store_device, pin=cfg.eval_offload and device.type == "cuda")
            rows = batch["index"].to(store_device)
            tokens[rows] = enc.frame_tokens
            feats[rows.to(feats.device)] = enc.feats
        _check_readable(failed)
        if tokens is None:  # more ranks than items: an empty share with the right shapes
            blank = torch.zeros(1, max(cfg.num_frames_test, 1), 3, image_res, image_res)
            tokens, feats = _allocate(0, encode_videos(model, blank, dtype, store_device), store_device, pin=False)
    feats = gather_strided(feats, len(media))
    _, world = rank_world()
    return EncodedVideos(tokens, feats, torch.tensor(mine) if world > 1 else None)


def _allocate(n: int, like: EncodedVideos, store_device: torch.device, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty (frame tokens, features) for `n` videos shaped like one encoded batch: each video's tokens
    are written straight into their final place, never held twice (pinned host memory when offloading
    from a GPU, so streaming them back is asynchronous)."""
    t = like.frame_tokens
    tokens = torch.empty((n, *t.shape[1:]), dtype=t.dtype, device=store_device, pin_memory=pin)
    feats = torch.empty((n, *like.feats.shape[1:]), dtype=like.feats.dtype, device=like.feats.device)
    return tokens, feats


def encode_text_list(
    model, tokenizer, texts: list[str], max_len: int, batch: int = 256, pad_to_longest: bool = True
) -> EncodedTexts:
    """Text tokens, masks and features of `texts`; padded to the longest text (the release pads to
    `max_len`: the same scores, more padded positions in every re-ranking pass)."""
    enc = to_device(tokenizer(texts, max_len, pad_to_longest), model_device(model))
    parts = []
    for start in range(0, len(texts), batch):
        sl = slice(start, start + batch)
        parts.append(encode_texts(model, enc["input_ids"][sl], enc["attention_mask"][sl]))
    return EncodedTexts(*(torch.cat([getattr(p, f) for p in parts]) for f in ("tokens", "mask", "feats")))


def _best_ranks(scores: torch.Tensor, gts: list[list[int]]) -> list[int]:
    out = []
    for row, gt in zip(scores.numpy(), gts, strict=True):
        order = np.argsort(row)[::-1]
        out.append(int(min(np.where(order == g)[0][0] for g in gt)))
    return out


@torch.no_grad()
def evaluate(model, cfg: EvalConfig, out_dir: str | Path | None) -> dict[str, Any]:
    """Run the evaluation on the model's device, write `metrics.json` and `ranks.json` /
    `predictions.json` to `out_dir` (None: write nothing); return the metrics. Under torch.distributed
    every rank takes its share of the work, every rank returns the same metrics and rank 0 writes."""
    out_dir = Path(out_dir) if out_dir is not None and is_main() else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    device = model_device(model)
    tokenizer = ReleaseTokenizer(cfg.tokenizer)
    res = cfg.image_res or model.config.vision.image_size
    ens = cfg.eval_frame_ensemble
    files: dict[str, Any] = {}
    with autocast(eval_precision(cfg, device), device):
        if cfg.task == "retrieval":
            ev = load_retrieval_eval(cfg.test_file, cfg.multi_video_gt, cfg.paragraph)
            texts = encode_text_list(model, tokenizer, ev.texts, cfg.max_txt_l)
            videos = encode_media(model, ev.media, cfg, res)
            s = rerank(model, texts, videos, k_test=cfg.k_test, ensemble=ens, progress=is_main())
            metrics = {
                "reranked": retrieval_metrics(s.v2t_x, s.t2v_x, ev.text_to_media, ev.media_to_text),
                "dual_encoder": retrieval_metrics(s.v2t_emb, s.t2v_emb, ev.text_to_media, ev.media_to_text),
            }
            files["ranks.json"] = {
                "text_to_video_rank": _best_ranks(s.t2v_x, ev.text_to_media),
                "video_to_text_rank": _best_ranks(s.v2t_x, ev.media_to_text),
                "texts": ev.texts,
                "videos": ev.media,
            }
        elif cfg.task == "mc":
            items = load_mc(cfg.test_file)
            options = encode_text_list(model, tokenizer, [o for it in items for o in it.options], cfg.max_txt_l)
            videos = encode_media(model, [it.media for it in items], cfg, res)
            n_opt = len(items[0].options)
            scores = mc_scores(model, videos, options, n_opt, ens)
            metrics = {"accuracy": mc_accuracy(scores, [it.answer for it in items])}
            files["predictions.json"] = [
                {"video": it.media, "prediction": int(p), "answer": it.answer}
                for it, p in zip(items, scores.argmax(1).tolist(), strict=True)
            ]
        else:
            preds = _answer_questions(model, cfg, tokenizer, res, device)
            metrics = qa_metrics(preds)
            files["predictions.json"] = predictions_to_json(preds)
    result = {"task": cfg.task, "ensemble": ens, "num_frames_test": cfg.num_frames_test, **metrics}
    if out_dir is not None:
        for name, content in files.items():
            (out_dir / name).write_text(json.dumps(content, indent=None if name == "ranks.json" else 1))
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _answer_questions(model, cfg: EvalConfig, tokenizer, res: int, device: torch.device) -> list:
    """Predictions for every question (each rank answers its share; gathered in question order)."""
    if cfg.answer_list is None and not cfg.qa_generate:
        raise ValueError("QA evaluation needs answer_list (or qa_generate=true for open-ended answers)")
    items = load_qa(cfg.test_file)
    answers = load_answer_list(cfg.answer_list) if cfg.answer_list else []
    enc_a = to_device(tokenizer([f"{a} [SEP]" for a in answers], cfg.max_a_len), device) if answers else None
    mine = list(my_share(len(items)))
    preds: list[tuple[int, Any]] = []
    failed = 0
    loader = _media_loader([items[i].media for i in mine], cfg, res, device)
    for batch in tqdm(loader, desc="answering", unit="batch", disable=not is_main()):
        failed += batch["skipped"]
        if not batch["size"]:
            continue
        its = [(mine[i], items[mine[i]]) for i in batch["index"].tolist()]
        q = to_device(tokenizer([it.question for _, it in its], cfg.max_q_len), device)
        video = batch["video"].to(device, non_blocking=True)
        if cfg.qa_generate:  # open-ended: greedy decoding, no answer list needed
            gen = greedy_answers(model, video, q["input_ids"], q["attention_mask"], cfg.max_a_len)
            texts = [decode_answer(tokenizer, row) for row in gen.tolist()]
        else:
            ranking = model.rank_answers(
                video,
                q["input_ids"],
                q["attention_mask"],
                enc_a["input_ids"],
                enc_a["attention_mask"],
                k=cfg.k_test,
                ensemble=cfg.eval_frame_ensemble,
            )
            texts = [answers[best] for best in ranking.topk_ids[:, 0].tolist()]
        for (i, it), text in zip(its, texts, strict=True):
            preds.append(
                (i, make_prediction(it.question_id, text, it.answers, cfg.qa_metric, it.all_answers, it.answer_type))
            )
    _check_readable(failed)
    return [p for _, p in sorted(gather_objects(preds), key=lambda x: x[0])]
