"""Training configuration: an OmegaConf structured config mirroring the release's YAML keys, loaded from
a file plus dotted `key=value` overrides; `${oc.env:VAR}` paths resolve with clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from singularity_vl.configs import resolve_config


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    weight_decay: float = 0.02
    opt_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = -1.0  # <= 0: no clipping (release default)
    different_lr_names: list[str] = field(default_factory=list)  # e.g. [temporal_vision_encoder]
    different_lr: float | None = None
    freeze: list[str] = field(default_factory=list)  # parameters whose names contain one of these stay fixed


@dataclass
class SchedulerConfig:
    epochs: float = 10
    warmup_epochs: float = 1
    min_lr_multi: float = 0.01


@dataclass
class TrainConfig:
    task: str = "pretrain"  # pretrain | retrieval | qa
    train_file: list[Any] = field(default_factory=list)  # list of [annotation, media root, "image"|"video"]
    test_file: list[str] | None = None  # test set: evaluated at each epoch end and with the kept model
    val_file: list[str] | None = None  # validation set: with model_selection=val, picks the kept epoch
    # which epoch's model is kept as `best/`: last (the release for MSRVTT, SSv2, pre-training) or the best
    # `stop_key` on `val_file` (the release for DiDeMo, ActivityNet, COCO, Flickr; test is only reported)
    model_selection: str = "last"
    answer_list: str | None = None  # QA: JSON list of candidate answers (for evaluation)
    qa_metric: str = "exact"  # QA: exact (answer string equal, MSRVTT-QA, ActivityNet-QA) | vqa (VQA accuracy)
    multi_video_gt: bool = False  # SSv2-template: one caption, many videos (caption is the match key)
    paragraph: bool = False  # DiDeMo, ActivityNet: captions of a video joined into one paragraph
    max_q_len: int = 25
    max_a_len: int = 5
    output_dir: str = "runs/train"
    model: str = "tiny"  # preset name, or a model directory / release .pth to start from
    vision_init: str | None = None  # local HF BEiT/ViT directory (with a preset)
    text_init: str | None = None  # local HF BERT directory (with a preset)
    # model=base without vision_init/text_init starts BEiT/BERT from random weights: refused unless true
    from_scratch: bool = False
    image_res: int | None = None
    # second-stage temporal pre-training: add a temporal encoder of this depth (0: keep the model as is)
    temporal_layers: int = 0
    update_pooler_embed: bool = False  # with temporal_layers: the temporal encoder's frame CLS feeds ITC too
    temporal_embed_init_std: float = 0.0  # with temporal_layers: N(0, std) for new temporal embeddings (0: zeros)
    num_frames: int = 1
    sample_type: str = "rand"
    num_frames_test: int = 4
    sample_type_test: str = "middle"
    max_txt_l: int = 32
    # pad each batch's texts to its longest (not the release's `max_txt_l`): the same losses on fewer
    # positions (the MLM draws differ in shape only); False reproduces the release's padding
    pad_to_longest: bool = True
    batch_size: dict[str, int] = field(default_factory=lambda: {"image": 128, "video": 96})
    batch_size_test: int = 64
    k_test: int = 128
    eval_offload: bool = False  # evaluation: keep encoded test videos on the CPU (long videos, many frames)
    eval_store_dtype: str = "auto"  # evaluation: dtype of the stored video tokens (auto: the compute dtype)
    flip: str = "off"  # off | on (release) | swap (flip and swap left/right in captions)
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random resized crop area (release)
    loss_weight: dict[str, float] = field(default_factory=lambda: {"itc": 1.0, "itm": 1.0, "mlm": 1.0})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the model
    compile_backend: str = "inductor"
    tensorboard: bool = False  # also write scalars to output_dir/tensorboard (needs the tensorboard package)
    itc_gather: bool = False
    # each text with its own video played backwards as a further ITM negative (multi-frame training only;
    # only for captions whose reversed event is another event, e.g. SSv2-template-like "moves to the left")
    itm_reversed_negatives: bool = False
    seed: int = 42
    device: str = (
        "auto"  # auto (cuda when a GPU is visible, else cpu) | cpu | cuda | cuda:N; torchrun: LOCAL_RANK's GPU
    )
    num_workers: Any = "auto"  # data-loader workers per process: auto (sized from the machine and device) or a count
    # MiB of decoded videos kept in memory (0: off): each file decoded once, later epochs read from memory;
    # for corpora that fit, with num_workers=0 (a worker keeps its own copy)
    decoded_clip_cache_mb: float = 0.0
    resume: str | None = "auto"  # auto: newest good checkpoint in output_dir; empty: fresh; or a checkpoint path
    checkpoint_every: int = 0  # steps; 0: at epoch ends only
    keep_last: int = 2
    stop_key: str = "r_mean"  # metric on val_file that selects `best/` (model_selection=val)
    log_every: int = 10
    max_steps: int = 0  # stop after this many optimizer steps (0: run the schedule); for tests and smoke runs
    tokenizer: str | None = None


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Structured config from YAML + overrides, fully resolved; errors name the file or key."""
    base = OmegaConf.structured(TrainConfig)
    try:
        if path is not None:
            path = resolve_config(path)
            base = OmegaConf.merge(base, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ValueError(f"overrides must be key=value, got {bad}")
            base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(base)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # noqa: BLE001 - OmegaConf errors (unknown key, missing env var) -> one line
        raise ValueError(f"{path or 'config'}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if cfg.task not in ("pretrain", "retrieval", "qa"):
        raise ValueError(f"task must be pretrain, retrieval or qa, got {cfg.task!r}")
    if not cfg.train_file:
        raise ValueError("train_file is required: a list of [annotation.json, media root, 'image'|'video']")
    if cfg.grad_accum < 1:
        raise ValueError("grad_accum must be >= 1")
    if cfg.model_selection not in ("last", "val"):
        raise ValueError(f"model_selection must be last or val, got {cfg.model_selection!r}")
    if cfg.model_selection == "val" and not cfg.val_file:
        raise ValueError("model_selection=val needs val_file: [annotation.json, media root, 'video'|'image']")
    from singularity_vl.devices import auto_num_workers

    auto_num_workers("cpu", cfg.num_workers)  # validates
    if cfg.qa_metric not in ("exact", "vqa"):
        raise ValueError(f"qa_metric must be exact or vqa, got {cfg.qa_metric!r}")
    check_initial_weights(cfg)
    return cfg


def check_initial_weights(cfg: TrainConfig) -> None:
    """Refuse to start the base model's BEiT or BERT from random weights unless `from_scratch` says so:
    the paper (and the release) start from BEiT-B/16 pt22k-ft22k and bert-base-uncased."""
    if cfg.model != "base" or cfg.from_scratch:
        return
    missing = [key for key in ("vision_init", "text_init") if not getattr(cfg, key)]
    if missing:
        raise ValueError(
            f"model=base with no {' and no '.join(missing)} would start from random weights; give local copies "
            "of microsoft/beit-base-patch16-224-pt22k-ft22k (vision_init) and bert-base-uncased (text_init), "
            "or set from_scratch=true"
        )


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
