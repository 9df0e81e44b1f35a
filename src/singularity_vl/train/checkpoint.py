"""Training checkpoints: written atomically, weights in safetensors, the rest of the state beside them,
loadable with `weights_only=True`; `resume="auto"` finds the newest complete one."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from singularity_vl.models.singularity import CONFIG_NAME, WEIGHTS_NAME, SingularityBase

STATE_NAME = "train_state.pt"
META_NAME = "meta.json"
_CKPT = re.compile(r"^ckpt_(\d{8})$")
_ASIDE_PREFIX = ".replaced_"  # a checkpoint being replaced by a new one of the same step


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain data and tensors (safe to load with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: SingularityBase,
    train_state: dict[str, Any],
    meta: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write `run_dir/ckpt_<step>/` (model.safetensors, config.json, train_state.pt, meta.json) into a
    temporary directory, fsync it, then rename it into place; only then are older checkpoints beyond
    `keep_last` removed. A checkpoint of the same step is first moved aside and removed last, so a crash
    at any point leaves a complete checkpoint (`list_checkpoints` puts a moved-aside one back)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt_{step:08d}"
    tmp = run_dir / f".tmp_ckpt_{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp)
        torch.save(train_state, tmp / STATE_NAME)
        (tmp / META_NAME).write_text(json.dumps({"step": step, **(meta or {})}, indent=2))
        _fsync_tree(tmp)
        aside = run_dir / f"{_ASIDE_PREFIX}{final.name}"
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_writes(run_dir: str | Path) -> None:
    """Remove temporary checkpoint directories a killed writer left in `run_dir` (call before writing)."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for tmp in run_dir.glob(".tmp_ckpt_*"):
            shutil.rmtree(tmp, ignore_errors=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    for aside in run_dir.glob(f"{_ASIDE_PREFIX}ckpt_*"):  # a replacement cut short: the old one comes back
        if not (run_dir / aside.name[len(_ASIDE_PREFIX) :]).exists():
            os.replace(aside, run_dir / aside.name[len(_ASIDE_PREFIX) :])
    found = []
    for d in run_dir.iterdir():
        if (
            d.is_dir()
            and _CKPT.match(d.name)
            and all((d / n).is_file() for n in (CONFIG_NAME, WEIGHTS_NAME, STATE_NAME))
        ):
            found.append(d)
    return sorted(found, key=lambda d: int(_CKPT.match(d.name).group(1)))


def load_checkpoint(path: str | Path) -> tuple[SingularityBase, dict[str, Any], dict[str, Any]]:
    """(model, train state, meta) of one checkpoint directory; the state is loaded with weights_only."""
    path = Path(path)
    model = SingularityBase.from_pretrained(path)
    state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    meta = json.loads((path / META_NAME).read_text()) if (path / META_NAME).is_file() else {}
    return model, state, meta


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, SingularityBase, dict[str, Any], dict[str, Any]] | None:
    """The newest checkpoint that loads (a damaged newer one is reported and skipped), or None."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            model, state, meta = load_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - any damage: fall back to the previous checkpoint
            print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying an older one")
            continue
        return path, model, state, meta
    return None
