"""Load the release's `.pth` files without executing pickled code.

`torch.load(weights_only=True)` refuses release checkpoints because they pickle an OmegaConf config next to
the weights. This loader uses a restricted unpickler instead: torch's tensor/storage rebuild functions and
plain containers are allowed, OmegaConf/typing objects are rebuilt as inert `OpaqueObject`s (their state is
kept as data, no method of theirs runs), and any other global (os.system, eval, ...) stops the load
before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """The file references code outside the allow-list; nothing was executed."""


class NotACheckpointError(ValueError):
    """The file is missing, truncated, or not a torch checkpoint."""


_ALLOWED = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bool"),
    ("builtins", "bytes"),
    ("builtins", "object"),
    ("builtins", "type"),
    ("copyreg", "_reconstructor"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Tensor"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}
# Rebuilt as inert data holders (no code of theirs runs); the release pickles an OmegaConf config.
_OPAQUE_MODULES = ("omegaconf", "typing", "enum", "pathlib", "argparse")


class OpaqueObject:
    """Stand-in for an object of a non-allowed but harmless class; keeps its pickled state as data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> OpaqueObject:
        return OpaqueObject(*args)

    def __repr__(self) -> str:
        return f"<opaque {getattr(type(self), 'qualname', 'object')}>"

    def to_plain(self) -> Any:
        """Best-effort plain-data view of an OmegaConf node tree (dicts, lists, values)."""
        return _plain(self)


def _plain(obj: Any, depth: int = 0) -> Any:
    if depth > 50:
        return None
    if isinstance(obj, OpaqueObject):
        state = obj.state
        if isinstance(state, dict) and "_content" in state:
            return _plain(state["_content"], depth + 1)
        if isinstance(state, tuple) and state and isinstance(state[-1], dict) and "_content" in state[-1]:
            return _plain(state[-1]["_content"], depth + 1)
        if isinstance(state, dict) and "_val" in state:
            return _plain(state["_val"], depth + 1)
        return None
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return obj


def _opaque_class(module: str, name: str) -> type:
    return type(name, (OpaqueObject,), {"qualname": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles name Python 2 modules (`__builtin__`); normalise as pickle itself would
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and (name.endswith("Storage") or name in {"float32", "float16", "bfloat16", "int64"}):
            return super().find_class(module, name)
        if module.split(".")[0] in _OPAQUE_MODULES:
            return _opaque_class(module, name)
        raise UnsafeCheckpointError(f"refusing to load global {module}.{name}: not allowed in a checkpoint")


_restricted_module = ModuleType("singularity_restricted_pickle")
_restricted_module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_module.load = pickle.load  # type: ignore[attr-defined]
_restricted_module.__name__ = "singularity_restricted_pickle"


def safe_torch_load(path: str | Path) -> Any:
    """`torch.load` of an untrusted file through the restricted unpickler (CPU tensors)."""
    path = Path(path)
    if not path.is_file():
        raise NotACheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise NotACheckpointError(f"{path}: empty file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise NotACheckpointError(f"{path}: corrupt member {bad} (truncated download?)")
        except zipfile.BadZipFile as e:
            raise NotACheckpointError(f"{path}: corrupt zip archive ({e})") from e
    try:
        return torch.load(path, map_location="cpu", pickle_module=_restricted_module, weights_only=False)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise NotACheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
