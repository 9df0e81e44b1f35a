"""Shared fixtures: the release's reference tensors (tests/reference, or another set in the same format named by
`SINGULARITY_REFERENCE_DIR`) and tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "reference"


def reference_dir() -> Path:
    return Path(os.environ.get("SINGULARITY_REFERENCE_DIR", DEFAULT_REFERENCE))


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    path = reference_dir()
    if not (path / "meta.json").is_file():  # the set ships with the tests: a missing one is an error, not a skip
        raise FileNotFoundError(f"no reference set at {path} (meta.json missing; check SINGULARITY_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="session")
def ref_meta(ref_dir: Path) -> dict:
    return json.loads((ref_dir / "meta.json").read_text())


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
