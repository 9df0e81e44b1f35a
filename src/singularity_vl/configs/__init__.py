"""The shipped recipes (YAML), usable by name: `--config ret_msrvtt` finds `ret_msrvtt.yaml` here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any


def shipped_configs() -> list[str]:
    """Names of the configs that ship with the package (without `.yaml`)."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A YAML file path as given, or a shipped config by name (`ret_msrvtt` or `ret_msrvtt.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name if path.suffix == ".yaml" and len(path.parts) == 1 else f"{path}.yaml"
    shipped = resources.files(__name__) / name
    if len(path.parts) == 1 and shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(
        f"{name_or_path}: config file not found (nor a shipped config: {', '.join(shipped_configs())})"
    )


# keys of a training recipe that mean the same in an evaluation config (EvalConfig)
_EVAL_KEYS = (
    "task",
    "test_file",
    "answer_list",
    "qa_metric",
    "num_frames_test",
    "sample_type_test",
    "k_test",
    "max_txt_l",
    "max_q_len",
    "max_a_len",
    "multi_video_gt",
    "paragraph",
    "image_res",
    "tokenizer",
    "eval_offload",
    "eval_store_dtype",
)


def evaluation_view(cfg: Any) -> Any:
    """A training recipe (a YAML with `train_file`) as an evaluation config: its test set and test-time
    settings, `batch_size_test` as the batch size, pre-training's zero-shot retrieval as `retrieval`; so
    `evaluate --config ret_msrvtt` evaluates as that recipe's training does. Other configs pass unchanged."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_dict(cfg) or "train_file" not in cfg:
        return cfg
    out = OmegaConf.masked_copy(cfg, [k for k in _EVAL_KEYS if k in cfg])
    if out.get("task") == "pretrain":
        out.task = "retrieval"
    if "batch_size_test" in cfg:
        out.batch_size = cfg.batch_size_test
    return out
