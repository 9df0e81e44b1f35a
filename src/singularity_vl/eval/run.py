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

from singularity_vl.configs import resolve_config
from singularity_vl.data.annotations import load_answer_list, load_mc, load_qa, load_retrieval_eval
from singularity_vl.data.datasets import MediaEvalDataset, media_collate
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.transforms import EvalTransform
from singularity_vl.eval.mc import mc_accuracy, mc_scores
from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.qa import decode_answer, greedy_answers, make_prediction, predictions_to_json, qa_accuracy
from singularity_vl.eval.retrieval import EncodedTexts, EncodedVideos, encode_texts, encode_videos, rerank


class EvalDataError(ValueError):
    """The test set cannot be evaluated as given (e.g. unreadable test videos)."""


@dataclass
class EvalConfig:
    """What to evaluate and how (YAML, overridable with dotted `key=value` arguments)."""

    task: str = "retrieval"  # retrieval | mc | qa
    test_file: list[str] = field(default_factory=list)  # [annotation.json, media root, "video"|"image"]
    answer_list: str | None = None  # QA: JSON list of candidate answers
    qa_generate: bool = False  # QA: greedy open-ended generation instead of answer-list ranking
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
    num_workers: int = 0
    tokenizer: str | None = None  # vocab.txt or tokenizer directory; default: the bundled bert-base-uncased


def load_eval_config(path: str | Path | None, overrides: list[str] = ()) -> EvalConfig:
    base = OmegaConf.structured(EvalConfig)
    if path is not None:
        path = resolve_config(path)
        try:
            base = OmegaConf.merge(base, OmegaConf.load(path))
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
    if cfg.task not in ("retrieval", "mc", "qa"):
        raise ValueError(f"task must be retrieval, mc or qa, got {cfg.task!r}")
    if not cfg.test_file:
        raise ValueError("test_file is required: [annotation.json, media root, 'video'|'image']")
    return cfg


def _media_loader(media: list, cfg: EvalConfig, image_res: int) -> DataLoader:
    """Test frames of `media`, batched (unreadable items come back counted in `batch["skipped"]`)."""
    ds = MediaEvalDataset(media, EvalTransform(image_res), cfg.num_frames_test, cfg.sample_type_test)
    return DataLoader(ds, batch_size=cfg.batch_size, collate_fn=media_collate, num_workers=cfg.num_workers)


def encode_media(model, media: list, cfg: EvalConfig, image_res: int, progress: bool = True) -> EncodedVideos:
    """Test frames of every item (`cfg.num_frames_test`, `cfg.sample_type_test`) through the vision side;
    an unreadable item is an `EvalDataError`."""
    parts: list[EncodedVideos] = []
    failed = 0
    loader = _media_loader(media, cfg, image_res)
    for batch in tqdm(loader, desc="encoding videos", unit="batch", disable=not progress):
        failed += batch["skipped"]
        if batch["size"]:
            parts.append(encode_videos(model, batch["video"]))
    if failed:
        raise EvalDataError(
            f"{failed} test video(s) could not be read (see the warnings above); evaluation needs every test video"
        )
    return EncodedVideos(*(torch.cat([getattr(p, f) for p in parts]) for f in ("tokens", "frame_tokens", "feats")))


def encode_text_list(
    model, tokenizer, texts: list[str], max_len: int, batch: int = 256, pad_to_longest: bool = True
) -> EncodedTexts:
    """Text tokens, masks and features of `texts`; padded to the longest text (the release pads to
    `max_len`: the same scores, more padded positions in every re-ranking pass)."""
    enc = tokenizer(texts, max_len, pad_to_longest)
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
def evaluate(model, cfg: EvalConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the evaluation, write `metrics.json` and `ranks.json` / `predictions.json`; return the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    tokenizer = ReleaseTokenizer(cfg.tokenizer)
    res = cfg.image_res or model.config.vision.image_size
    ens = cfg.eval_frame_ensemble
    if cfg.task == "retrieval":
        ev = load_retrieval_eval(cfg.test_file, cfg.multi_video_gt, cfg.paragraph)
        texts = encode_text_list(model, tokenizer, ev.texts, cfg.max_txt_l)
        videos = encode_media(model, ev.media, cfg, res)
        s = rerank(model, texts, videos, k_test=cfg.k_test, ensemble=ens, progress=True)
        metrics = {
            "reranked": retrieval_metrics(s.v2t_x, s.t2v_x, ev.text_to_media, ev.media_to_text),
            "dual_encoder": retrieval_metrics(s.v2t_emb, s.t2v_emb, ev.text_to_media, ev.media_to_text),
        }
        detail = {
            "text_to_video_rank": _best_ranks(s.t2v_x, ev.text_to_media),
            "video_to_text_rank": _best_ranks(s.v2t_x, ev.media_to_text),
            "texts": ev.texts,
            "videos": ev.media,
        }
        (out_dir / "ranks.json").write_text(json.dumps(detail))
    elif cfg.task == "mc":
        items = load_mc(cfg.test_file)
        options = encode_text_list(model, tokenizer, [o for it in items for o in it.options], cfg.max_txt_l)
        videos = encode_media(model, [it.media for it in items], cfg, res)
        n_opt = len(items[0].options)
        scores = mc_scores(model, videos, options, n_opt, ens)
        metrics = {"accuracy": mc_accuracy(scores, [it.answer for it in items])}
        preds = [
            {"video": it.media, "prediction": int(p), "answer": it.answer}
            for it, p in zip(items, scores.argmax(1).tolist(), strict=True)
        ]
        (out_dir / "predictions.json").write_text(json.dumps(preds, indent=1))
    else:
        if cfg.answer_list is None and not cfg.qa_generate:
            raise ValueError("QA evaluation needs answer_list (or qa_generate=true for open-ended answers)")
        items = load_qa(cfg.test_file)
        answers = load_answer_list(cfg.answer_list) if cfg.answer_list else []
        enc_a = tokenizer([f"{a} [SEP]" for a in answers], cfg.max_a_len) if answers else None
        preds = []
        for batch in tqdm(_media_loader([it.media for it in items], cfg, res), desc="answering", unit="batch"):
            if batch["skipped"]:
                raise EvalDataError("a test video could not be read; evaluation needs every test video")
            its = [items[i] for i in batch["index"].tolist()]
            q = tokenizer([it.question for it in its], cfg.max_q_len)
            if cfg.qa_generate:  # open-ended: greedy decoding, no answer list needed
                gen = greedy_answers(model, batch["video"], q["input_ids"], q["attention_mask"], cfg.max_a_len)
                texts = [decode_answer(tokenizer, row) for row in gen.tolist()]
            else:
                ranking = model.rank_answers(
                    batch["video"],
                    q["input_ids"],
                    q["attention_mask"],
                    enc_a["input_ids"],
                    enc_a["attention_mask"],
                    k=cfg.k_test,
                    ensemble=ens,
                )
                texts = [answers[best] for best in ranking.topk_ids[:, 0].tolist()]
            for it, text in zip(its, texts, strict=True):
                preds.append(make_prediction(it.question_id, text, it.answers))
        metrics = {"accuracy": qa_accuracy(preds)}
        (out_dir / "predictions.json").write_text(json.dumps(predictions_to_json(preds), indent=1))
    result = {"task": cfg.task, "ensemble": ens, "num_frames_test": cfg.num_frames_test, **metrics}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
