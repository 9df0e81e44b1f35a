"""`singularity-vl demo`: the paper's single-frame-bias experiment on a laptop CPU.

Generates the synthetic corpus (`singularity_vl.data.synthetic`), pre-trains a small model on single
frames (text encoder from the real MiniLM), fine-tunes (a) a single-frame model and (b) a 4-frame model
with a temporal encoder, evaluates both on the `template`, `label` and `static` caption sets with 1, 4
and 8 test frames and every frame ensemble, then writes `report.json`, `report.md` and `report.png`.
Each finished stage is kept, so a re-run (or a killed run) continues where it stopped. Each stage folder
records (`stage.json`) the seed and every setting that shapes it, and the record of the stage it starts
from; a re-run with other settings says what differs and runs that stage (and those after it) again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from singularity_vl.api import load_model
from singularity_vl.data.annotations import load_retrieval_eval
from singularity_vl.data.synthetic import TASKS, CorpusFiles, SyntheticConfig, chance_t2v_r1, generate_corpus
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.video_reader import set_decoded_clip_cache
from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.retrieval import EncodedVideos, rerank_ensembles
from singularity_vl.eval.run import EvalConfig, encode_media, encode_text_list
from singularity_vl.models.config import SingularityConfig, VisionConfig
from singularity_vl.models.losses import ENSEMBLES
from singularity_vl.models.singularity import SingularityBase

MODELS = ("single_frame", "temporal")
# trained from scratch (vision tower, projections, cross-attention, ITM head): a higher rate than MiniLM's layers
FRESH_PARAMS = ["vision_encoder", "vision_layernorm", "vision_proj", "text_proj", "crossattention", "itm_head"]


@dataclass
class DemoSettings:
    """Sizes and schedules of the demo; `quick()` is the few-minute variant used by the tests."""

    corpus: SyntheticConfig = field(default_factory=SyntheticConfig)
    vision_width: int = 128
    vision_layers: int = 4
    patch_size: int = 8
    # all six MiniLM layers are text-only (its [CLS] only becomes sentence-specific in the last one), then
    # `fusion_layers` fresh layers add cross-attention to the video
    fusion_layers: int = 2
    pretrain_batch_size: int = 32
    pretrain_epochs: float = 2  # over the `frames` images (2 per training video)
    min_lr_multi: float = 1.0  # pre-training: constant rate after warm-up (fine-tuning continues from it)
    # fine-tuning: cosine decay to this fraction, so the evaluated weights come from a settled end of training
    # rather than a step at full rate (at a constant rate, a loss spike 30 steps before the end of a
    # template run once undid most of what ITM had learnt)
    finetune_min_lr_multi: float = 0.1
    lr: float = 1e-4  # MiniLM's layers
    fresh_lr: float = 1e-3  # modules trained from scratch (vision, fusion, projections, temporal modules)
    finetune_batch_size: int = 16
    objects_epochs: float = 0.5  # label + static fine-tuning (the model evaluated on label and static)
    # template fine-tuning (the model evaluated on template) on the template and the label captions of the
    # training videos: 2.5 epochs over both = 300 steps
    template_epochs: float = 2.5
    temporal_frames: int = 4
    temporal_layers: int = 2
    temporal_embed_init_std: float = 1.0  # the release starts them at zero (the ITM gradient then stalls)
    test_frames: tuple[int, ...] = (1, 4, 8)
    k_test: int = 8  # label / static candidates re-ranked per query (template: every video)
    max_steps: int = 0  # cap per training stage (0: the schedule), for tests
    itm_hard_negatives: bool = False
    # every training and test video decoded once and kept in memory (~210 MiB for the default corpus)
    decoded_clip_cache_mb: float = 512
    finetune_mlm_weight: float = 1.0  # 0: the release's fine-tuning losses (ITC + ITM)

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            corpus=SyntheticConfig(train_per_action=8, test_per_action=3, frames_per_video=1),
            vision_width=64,
            vision_layers=2,
            fusion_layers=1,
            pretrain_batch_size=16,
            pretrain_epochs=1,
            objects_epochs=1,
            template_epochs=1,
            k_test=4,
        )


def model_config(s: DemoSettings) -> SingularityConfig:
    """Pre-training architecture: a small BEiT on 64 px frames and the 6-layer MiniLM as text encoder."""
    from singularity_vl.checkpoint.hf_init import minilm_dir, text_config_from_hf

    text = text_config_from_hf(minilm_dir())
    text.fusion_layer = text.num_layers
    text.num_layers += s.fusion_layers
    # no dropout: a few hundred steps from scratch need no regularisation, and CPU attention with dropout
    # leaves the fast SDPA kernel
    text.hidden_dropout = text.attention_dropout = 0.0
    return SingularityConfig(
        task="pretrain",
        vision=VisionConfig(
            image_size=s.corpus.size,
            patch_size=s.patch_size,
            hidden_size=s.vision_width,
            num_layers=s.vision_layers,
            num_heads=4,
            intermediate_size=2 * s.vision_width,
            drop_path_rate=0.0,
            # where a token is (not the release's BEiT setting): the position captions of pre-training and
            # every direction of motion need it (relative position bias alone says where tokens are
            # relative to each other, not in the frame)
            abs_pos_emb=True,
        ),
        text=text,
        embed_dim=128,
        # ITM negatives drawn uniformly: the release's hard negatives (drawn from the ITC similarity) are,
        # early in a from-scratch run, exactly the pairs the vision cannot tell apart yet, and the ITM head
        # stays at its prior for the whole run (measured; see docs/DEMO.md)
        itm_hard_neg=s.itm_hard_negatives,
    )


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Records the wall time of the enclosed stage in `seconds[stage]`."""
    start = time.time()
    yield
    seconds[stage] = round(time.time() - start, 1)


STAGE_RECORD = "stage.json"
# training settings that do not change what a stage produces (left out of its record)
NOT_SHAPING = ("decoded_clip_cache_mb", "resume", "model", "device")


def stage_id(key: dict[str, Any]) -> str:
    """A short digest of a stage record, for the records of the stages that start from it."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _differences(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """'seed 0 -> 1, train.max_steps 2 -> 3' for the settings that differ between two records."""
    a, b = _flat(old), _flat(new)
    diffs = [
        f"{k} {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def claim_stage(stage_dir: Path, key: dict[str, Any], finished: Path) -> bool:
    """True when `stage_dir` already holds the stage's output `finished`, made with the record `key`.
    Otherwise the folder is made to hold this stage only: what an earlier run of the demo left there with
    another record is removed, saying what differs, and `key` is recorded, so that a killed run resumes
    only the same stage. A folder with files but no record is not the demo's: an error, nothing removed."""
    key = json.loads(json.dumps(key))  # as read back (tuples -> lists)
    record = stage_dir / STAGE_RECORD
    why = ""
    try:
        previous = json.loads(record.read_text()) if record.is_file() else None
    except json.JSONDecodeError:
        previous, why = {}, f"its {STAGE_RECORD} is unreadable"
    if previous == key:
        if finished.exists():
            print(f"{stage_dir}: done before with the same settings, reusing")
            return True
        return False
    if previous is None and stage_dir.is_dir() and any(stage_dir.iterdir()):
        raise ValueError(
            f"{stage_dir}: holds files but no {STAGE_RECORD} saying which demo settings made them (an older"
            " version's run, or not the demo's): remove it, or choose another --out"
        )
    if previous is not None:
        why = why or _differences(previous, key)
        print(f"{stage_dir}: made with other settings ({why}); running this stage again")
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
    tmp.replace(record)
    return False


def _portable(value: Any, root: Path) -> Any:
    """`value` with paths under `root` written relative to it (a moved output folder keeps its records)."""
    if isinstance(value, dict):
        return {k: _portable(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(v, root) for v in value]
    if isinstance(value, str) and value.startswith(str(root) + "/"):
        return "<out>/" + value[len(str(root)) + 1 :]
    return value


def _train(stage_dir: Path, inputs: dict[str, Any], root: Path, **overrides: Any) -> tuple[Path, str]:
    """One training stage through the regular trainer; the final weights go to `stage_dir/final`, and the
    stage's resume checkpoints (weights again plus optimizer state, ~200 MB each) are then removed.
    `inputs` (the corpus settings and the record id of the stage it starts from) and the training settings
    form the stage's record (see `claim_stage`). Returns (final weights, record id)."""
    from singularity_vl.train.checkpoint import list_checkpoints
    from singularity_vl.train.config import TrainConfig
    from singularity_vl.train.loop import Trainer

    shaping = {k: v for k, v in overrides.items() if k not in NOT_SHAPING}
    key = {"inputs": inputs, "train": _portable(shaping, root)}
    final = stage_dir / "final"
    if claim_stage(stage_dir, key, final / "model.safetensors") and (final / "config.json").is_file():
        return final, stage_id(key)
    base = OmegaConf.structured(TrainConfig(output_dir=str(stage_dir), num_workers=0, log_every=10, keep_last=1))
    cfg = OmegaConf.to_object(OmegaConf.merge(base, overrides))
    trainer = Trainer(cfg)
    summary = trainer.run()
    if summary.get("stopped"):
        raise KeyboardInterrupt(f"{stage_dir}: training stopped; run the demo again to continue")
    trainer.model.save_pretrained(final)
    for done in list_checkpoints(stage_dir):
        shutil.rmtree(done)
    return final, stage_id(key)


def _fusion_layer_names(model_dir: Path) -> list[str]:
    """Parameter-name prefixes of the fusion layers (fresh in the demo model: trained at the higher rate)."""
    text = SingularityConfig.from_dict(json.loads((model_dir / "config.json").read_text())).text
    return [f"text_encoder.encoder.layer.{i}." for i in range(text.fusion_layer, text.num_layers)]


# which fine-tuned model answers which task: one fine-tuning per task family, as the paper fine-tunes
# separately for SSv2-label and SSv2-template
EVAL_MODEL = {"template": "template", "label": "objects", "static": "objects"}


def train_models(
    files: CorpusFiles,
    out: Path,
    s: DemoSettings,
    seed: int,
    seconds: dict[str, float] | None = None,
    device: str | None = None,
) -> dict[str, dict[str, Path]]:
    """Pre-train on single images, then fine-tune the single-frame and the temporal model, each on the
    object captions (label + static) and then, continuing from that, on the template and label captions.
    Returns model -> run -> dir; `seconds` receives each stage's wall time in this run; training runs on
    `device` (default: a GPU when there is one)."""
    seconds = {} if seconds is None else seconds
    init = out / "init"
    config = model_config(s)
    init_key = {"seed": seed, "model": config.to_dict()}
    if not claim_stage(init, init_key, init / "model.safetensors"):
        from singularity_vl.checkpoint.hf_init import init_from_hf, minilm_dir

        torch.manual_seed(seed)
        bert_layers = config.text.fusion_layer
        # MiniLM layers text-only; fusion layers fresh (None): copies of MiniLM's layers keep its [CLS] an
        # attention sink, so the fused [CLS] (ITM) would ignore the caption (measured; see docs/DEMO.md)
        layer_map = {i: i if i < bert_layers else None for i in range(config.text.num_layers)}
        init_from_hf(None, minilm_dir(), config=config, text_layer_map=layer_map).save_pretrained(init)
    corpus = asdict(s.corpus)
    fresh = [*FRESH_PARAMS, *_fusion_layer_names(init)]
    common = dict(
        task="pretrain",
        seed=seed,
        crop_scale=[0.8, 1.0],
        max_txt_l=16,
        multi_video_gt=True,
        max_steps=s.max_steps,
        resume="auto",
        decoded_clip_cache_mb=s.decoded_clip_cache_mb,
        device=str(device or "auto"),
    )
    # MiniLM's word embeddings (and the MLM decoder tied to them) stay as pre-trained: this small corpus
    # has ~60 distinct words, and their dense gradient was ~12% of each step
    optimizer = {"lr": s.lr, "different_lr_names": fresh, "different_lr": s.fresh_lr, "freeze": ["word_embeddings"]}
    total = 1 + 2 * len(MODELS)
    print(f"stage 1/{total}: pre-training on single images captioned with object and position (ITC + ITM + MLM)")
    with _timed(seconds, "pretrain"):
        pre, pre_id = _train(
            out / "pretrain",
            {"corpus": corpus, "model": stage_id(init_key)},
            out,
            model=str(init),
            train_file=[files.frames_spec()],
            num_frames=1,
            batch_size={"image": s.pretrain_batch_size, "video": s.pretrain_batch_size},
            optimizer=optimizer,
            scheduler={"epochs": s.pretrain_epochs, "warmup_epochs": 0.1, "min_lr_multi": s.min_lr_multi},
            **common,
        )
    runs = {
        # run -> (train files, epochs, the run it continues from: None for the pre-trained model)
        "objects": ([files.train_spec("label"), files.train_spec("static")], s.objects_epochs, None),
        # the label captions stay in the template run: with template captions alone (the action, no object),
        # the fused [CLS] of some seeds soon stopped depending on the video and ITM sat at its prior
        # (measured, seed 2: template R@1 16.7 -> 33.3, per-query AUC 0.58 -> 0.69 with them)
        "template": ([files.train_spec("template"), files.train_spec("label")], s.template_epochs, "objects"),
    }
    temporal_names = ["temporal_vision_encoder", "temporal_embeddings"]
    models: dict[str, dict[str, Path]] = {m: {} for m in MODELS}
    ids: dict[str, dict[str, str]] = {m: {} for m in MODELS}
    stage = 1
    for name in MODELS:
        temporal = name == "temporal"
        for run, (train_file, epochs, after) in runs.items():
            stage += 1
            frames = f"{s.temporal_frames} frames, temporal encoder" if temporal else "1 random frame per video"
            print(f"stage {stage}/{total}: fine-tuning the {name} model on the {run} captions ({frames})")
            extra = (
                dict(
                    num_frames=s.temporal_frames,
                    temporal_layers=s.temporal_layers,
                    temporal_embed_init_std=s.temporal_embed_init_std,
                    optimizer={**optimizer, "different_lr_names": [*temporal_names, *fresh]},
                )
                if temporal
                else dict(num_frames=1, optimizer=optimizer)
            )
            # fine-tuning keeps the MLM loss of pre-training (the release fine-tunes with ITC + ITM only):
            # without it the fused [CLS] of this small from-scratch model collapses to a constant within
            # ~10 steps and ITM falls back to its prior (measured; see docs/DEMO.md)
            with _timed(seconds, f"{name}/{run}"):
                models[name][run], ids[name][run] = _train(
                    out / name / run,
                    {"corpus": corpus, "model": ids[name][after] if after else pre_id},
                    out,
                    # template fine-tuning continues from the same model's objects fine-tuning (a curriculum:
                    # label captions name the motion together with the object): from the pre-trained model,
                    # seed 1's temporal template ITM never left its prior; from the objects model it did
                    # (measured, 300 steps: per-query AUC 0.81)
                    model=str(models[name][after] if after else pre),
                    train_file=train_file,
                    batch_size={"image": s.finetune_batch_size, "video": s.finetune_batch_size},
                    loss_weight={"itc": 1.0, "itm": 1.0, "mlm": s.finetune_mlm_weight},
                    scheduler={"epochs": epochs, "warmup_epochs": 0.05, "min_lr_multi": s.finetune_min_lr_multi},
                    **extra,
                    **common,
                )
    return models


def evaluate_models(
    files: CorpusFiles, models: dict[str, dict[str, Path]], s: DemoSettings, device: str | None = None
) -> list[dict[str, Any]]:
    """Every (model, task, frames, ensemble): re-ranked retrieval recalls in both directions, computed on
    `device` (default: a GPU when there is one)."""
    tokenizer = ReleaseTokenizer()
    rows = []
    jobs = [(m, t, f) for m in models for t in TASKS for f in s.test_frames]
    bar = tqdm(total=len(jobs), desc="evaluating", unit="setting")
    for name, runs in models.items():
        loaded: dict[str, SingularityBase] = {}
        # label and static share one model and the same test videos (in another order): encode them once
        encoded: dict[tuple[str, int], tuple[dict[str, int], EncodedVideos]] = {}
        for task in TASKS:
            run = EVAL_MODEL[task]
            if run not in loaded:
                loaded[run] = load_model(runs[run], device=device)
            model = loaded[run]
            ev = load_retrieval_eval(files.test_spec(task), multi_video_gt=True)
            texts = encode_text_list(model, tokenizer, ev.texts, 16)
            # template: 12 queries, so every video is re-ranked; label / static: the top k_test
            k = max(len(ev.texts), len(ev.media)) if task == "template" else s.k_test
            for frames in s.test_frames:
                if (run, frames) not in encoded:
                    test = EvalConfig(test_file=files.test_spec(task), num_frames_test=frames, batch_size=32)
                    videos = encode_media(model, ev.media, test, model.config.vision.image_size, progress=False)
                    encoded[run, frames] = ({m: i for i, m in enumerate(ev.media)}, videos)
                index, all_videos = encoded[run, frames]
                idx = torch.tensor([index[m] for m in ev.media])
                videos = EncodedVideos(all_videos.frame_tokens[idx], all_videos.feats[idx])
                scores = rerank_ensembles(model, texts, videos, k_test=k)
                first = scores[ENSEMBLES[0]]  # dual-encoder scores are the same for every ensemble
                dual = retrieval_metrics(first.v2t_emb, first.t2v_emb, ev.text_to_media, ev.media_to_text)
                for ens in ENSEMBLES:
                    sc = scores[ens]
                    m = retrieval_metrics(sc.v2t_x, sc.t2v_x, ev.text_to_media, ev.media_to_text)
                    rows.append(
                        {
                            "model": name,
                            "task": task,
                            "frames": frames,
                            "ensemble": ens,
                            "t2v_r1": m["img_r1"],
                            "t2v_r5": m["img_r5"],
                            "t2v_r10": m["img_r10"],
                            "v2t_r1": m["txt_r1"],
                            "v2t_r5": m["txt_r5"],
                            "v2t_r10": m["txt_r10"],
                            "r_mean": m["r_mean"],
                            "t2v_r1_dual_encoder": dual["img_r1"],
                            "v2t_r1_dual_encoder": dual["txt_r1"],
                            "checkpoint": str(runs[run]),
                        }
                    )
                bar.update(1)
    bar.close()
    return rows


def _find(rows: list[dict], **key: Any) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in key.items()))


def summarise(rows: list[dict], chance: dict[str, float], s: DemoSettings) -> dict[str, Any]:
    """The paper's comparison per task: the temporal model at its training frame count (`concat`) against
    the single-frame model in the same setting, and against its best over every frame count and ensemble
    (a maximum over 12 noisy numbers, so a stricter bar)."""
    out: dict[str, Any] = {}
    for task in TASKS:
        key = dict(task=task, frames=s.temporal_frames, ensemble="concat")
        temporal = _find(rows, model="temporal", **key)["t2v_r1"]
        single = _find(rows, model="single_frame", **key)["t2v_r1"]
        best = max(r["t2v_r1"] for r in rows if r["model"] == "single_frame" and r["task"] == task)
        out[task] = {
            "temporal_t2v_r1": temporal,
            "single_frame_t2v_r1": single,
            "single_frame_best_t2v_r1": best,
            "chance_t2v_r1": chance[task],
            "temporal_over_single": round(temporal / single, 3) if single else None,
            "temporal_over_single_best": round(temporal / best, 3) if best else None,
            "temporal_over_chance": round(temporal / (100 * chance[task]), 3),
        }
    t, st = out["template"], out["static"]
    tol = 0.1  # recalls are rounded to 0.1: 4 of 12 queries (33.3) is exactly twice 2 of 12 (16.7)
    out["checks"] = {
        # the paper's claim in miniature: template needs time, static does not
        "template_temporal_at_least_2x_single_frame": t["temporal_t2v_r1"] >= 2 * t["single_frame_t2v_r1"] - tol,
        "template_temporal_at_least_2x_single_frame_best": t["temporal_t2v_r1"]
        >= 2 * t["single_frame_best_t2v_r1"] - tol,
        "template_temporal_at_least_3x_chance": t["temporal_t2v_r1"] >= 3 * 100 * t["chance_t2v_r1"] - tol,
        "static_single_frame_within_10_points": abs(st["temporal_t2v_r1"] - st["single_frame_t2v_r1"]) <= 10,
    }
    return out


def format_table(rows: list[dict], chance: dict[str, float]) -> str:
    """Markdown table: text->video R@1 for each model, task and frame count, one column per ensemble."""
    lines = [
        "| model | task | frames | "
        + " | ".join(f"t2v R@1 {e}" for e in ENSEMBLES)
        + " | v2t R@1 concat | t2v R@1 dual encoder |",
        "|---|---|---|" + "---|" * (len(ENSEMBLES) + 2),
    ]
    keys = sorted({(r["model"], r["task"], r["frames"]) for r in rows}, key=lambda k: (k[1], k[0], k[2]))
    for model, task, frames in keys:
        cells = [f"{_find(rows, model=model, task=task, frames=frames, ensemble=e)['t2v_r1']:.1f}" for e in ENSEMBLES]
        row = _find(rows, model=model, task=task, frames=frames, ensemble="concat")
        lines.append(
            f"| {model} | {task} | {frames} | "
            + " | ".join(cells)
            + f" | {row['v2t_r1']:.1f} | {row['t2v_r1_dual_encoder']:.1f} |"
        )
    lines.append("")
    lines.append("chance t2v R@1: " + ", ".join(f"{t} {100 * c:.1f}" for t, c in chance.items()))
    return "\n".join(lines)


def plot(rows: list[dict], chance: dict[str, float], path: Path) -> None:
    """Grouped bars: t2v R@1 (concat) by task, model and test frame count, chance as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = sorted({r["frames"] for r in rows})
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 3.8), sharey=True)
    width = 0.8 / len(frames)
    colours = {"single_frame": ("#9ecae1", "#4292c6", "#08519c"), "temporal": ("#fdae6b", "#f16913", "#a63603")}
    for ax, task in zip(axes, TASKS, strict=True):
        for i, model in enumerate(MODELS):
            for j, f in enumerate(frames):
                value = _find(rows, model=model, task=task, frames=f, ensemble="concat")["t2v_r1"]
                x = i + (j - (len(frames) - 1) / 2) * width
                ax.bar(x, value, width * 0.95, color=colours[model][j % 3], label=f"{model}, {f} frames")
                ax.text(x, value + 1, f"{value:.0f}", ha="center", fontsize=7)
        ax.axhline(100 * chance[task], color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(MODELS)), [m.replace("_", " ") for m in MODELS])
        ax.set_title(f"{task} (chance {100 * chance[task]:.0f})")
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("text-to-video R@1 (%, concat)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2 * len(frames), fontsize=8, frameon=False)
    fig.suptitle("Single-frame vs temporal model on synthetic SSv2-like tasks")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(
    out: str | Path, settings: DemoSettings | None = None, seed: int = 0, device: str | None = None
) -> dict[str, Any]:
    """The whole experiment on `device` (default: a GPU when there is one); returns the report (also
    written to `out/report.json`)."""
    s = settings or DemoSettings()
    s = replace(s, corpus=replace(s.corpus, seed=seed))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"generating the synthetic corpus under {out / 'corpus'}")
    manifest = CorpusFiles(out / "corpus").manifest
    if manifest.is_file():
        previous = json.loads(manifest.read_text()).get("config", {})
        if previous != asdict(s.corpus):
            why = _differences(previous, asdict(s.corpus))
            print(f"{out / 'corpus'}: made with other settings ({why}); rendering it again")
    stage_seconds: dict[str, float] = {}
    with _timed(stage_seconds, "corpus"):
        files = generate_corpus(out / "corpus", s.corpus)
    set_decoded_clip_cache(s.decoded_clip_cache_mb)
    try:
        models = train_models(files, out, s, seed, stage_seconds, device)
        with _timed(stage_seconds, "evaluation"):
            rows = evaluate_models(files, models, s, device)
    finally:
        set_decoded_clip_cache(0)
    chance = {t: round(chance_t2v_r1(files.annotation(t, "test")), 4) for t in TASKS}
    report = {
        "chance_t2v_r1": chance,
        "results": rows,
        "summary": summarise(rows, chance, s),
        "settings": asdict(s),
        "seed": seed,
        "seconds": round(time.time() - start, 1),
        # wall time of each stage in this run (a stage reused from an earlier run takes ~0 s)
        "stage_seconds": stage_seconds,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    table = format_table(rows, chance)
    (out / "report.md").write_text(table + "\n")
    plot(rows, chance, out / "report.png")
    print(table)
    for task in TASKS:
        v = report["summary"][task]
        print(
            f"{task}: t2v R@1 temporal {v['temporal_t2v_r1']:.1f} vs single-frame {v['single_frame_t2v_r1']:.1f}"
            f" ({s.temporal_frames} frames, concat; single-frame best setting {v['single_frame_best_t2v_r1']:.1f})"
            f", chance {100 * v['chance_t2v_r1']:.1f}"
        )
    for check, ok in report["summary"]["checks"].items():
        print(f"  {'yes' if ok else 'NO '} {check.replace('_', ' ')}")
    print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in stage_seconds.items()))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {out / 'report.png'} in {report['seconds']:.0f} s")
    return report
