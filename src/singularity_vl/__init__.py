"""SINGULARITY video-language models: `model, transform, tokenizer = singularity_vl.load(name_or_path)`.

Importing the package is cheap: torch, the models and the package metadata load on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from singularity_vl.api import SingularityVL, VideoTransform, load, load_model, resolve
    from singularity_vl.data.text import ReleaseTokenizer
    from singularity_vl.zoo import list_models

__all__ = [
    "__version__",
    "load",
    "load_model",
    "resolve",
    "SingularityVL",
    "VideoTransform",
    "ReleaseTokenizer",
    "list_models",
]
_LAZY = {
    "load": "singularity_vl.api",
    "load_model": "singularity_vl.api",
    "resolve": "singularity_vl.api",
    "SingularityVL": "singularity_vl.api",
    "VideoTransform": "singularity_vl.api",
    "ReleaseTokenizer": "singularity_vl.data.text",
    "list_models": "singularity_vl.zoo",
}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("singularity-vl")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'singularity_vl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
