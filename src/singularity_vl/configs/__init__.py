"""The shipped recipes (YAML), usable by name: `--config ret_msrvtt` finds `ret_msrvtt.yaml` here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


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
