"""Load the release's `.pth` files without executing pickled code.

The release saves `{"model", "optimizer", "scheduler", "scaler", "config", "epoch", "global_step"}` with
`torch.save`, where `config` is an OmegaConf `DictConfig`. Pickled at protocol 2 (OmegaConf 2.1.1, as the
release pins; 2.4 pickles the same), that config needs these globals besides PyTorch's tensors and storages:
`omegaconf.dictconfig.DictConfig`, `omegaconf.listconfig.ListConfig`, `omegaconf.nodes.AnyNode`,
`omegaconf.base.Metadata`, `omegaconf.base.ContainerMetadata` (built with NEWOBJ + BUILD),
`collections.defaultdict(dict)` (REDUCE), and `typing.Any`, `builtins.dict` / `list` / `int` as values.
The optimizer, scheduler and scaler states are plain dicts, lists, numbers and tensors.

Loading goes through PyTorch's own `torch.load(weights_only=True)` unpickler with exactly those globals added
(`torch.serialization.safe_globals`). The OmegaConf names, `typing.Any` and the builtin types are bound to
inert stand-ins (`PickledConfigNode`) that keep their pickled state as plain data, so no OmegaConf code
runs, and that refuse to be called (the release never pickles a call to them). Anything else (os.system,
eval, subprocess, class construction through `type` or `copyreg`, a BUILD on an object of another class)
stops the load before it runs.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch


class UnsafeCheckpointError(ValueError):
    """The file references code outside the allow-list; nothing was executed."""


class NotACheckpointError(ValueError):
    """The file is missing, truncated, or not a torch checkpoint."""


class PickledConfigNode:
    """Inert stand-in for a pickled OmegaConf object: its pickled state kept as data, no method of its own
    beyond reading that state back (`to_plain`)."""

    __slots__ = ("state",)
    qualname: ClassVar[str] = "omegaconf object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # unpickling creates these with NEWOBJ (`__new__`, no call); a REDUCE that calls the class is refused
        raise pickle.UnpicklingError(f"refusing to call {self.qualname}: the release never pickles such a call")

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.qualname}>"

    def to_plain(self) -> Any:
        """Plain-data view of an OmegaConf node tree (dicts, lists, values; interpolations as their strings)."""
        return _plain(self, 0)


class PickledDefaultdict(PickledConfigNode):
    """Stand-in for the `collections.defaultdict(dict)` OmegaConf keeps as its (empty) resolver cache: the
    call is accepted with a stand-in factory only, and nothing is kept."""

    __slots__ = ()
    qualname: ClassVar[str] = "collections.defaultdict"

    def __init__(self, default_factory: Any = None) -> None:
        factory_ok = isinstance(default_factory, type) and issubclass(default_factory, PickledConfigNode)
        if default_factory is not None and not factory_ok:
            raise pickle.UnpicklingError(f"refusing to call collections.defaultdict with {default_factory!r}")
        self.state = None


def _stand_in(path: str) -> type[PickledConfigNode]:
    module, _, name = path.rpartition(".")
    return type(name, (PickledConfigNode,), {"__slots__": (), "qualname": path, "__module__": module})


# What a pickled OmegaConf config names: its classes (the value nodes other than AnyNode appear in typed
# configs) and, as values in its metadata, `typing.Any` and the builtin types. All are bound to stand-ins, so
# a pickle can neither call them nor BUILD or SETITEMS into a real dict/list through them.
_CONFIG_NAMES = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata",
    "typing.Any",
    "builtins.dict",
    "builtins.list",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
)
STAND_INS: dict[str, type[PickledConfigNode]] = {
    **{path: _stand_in(path) for path in _CONFIG_NAMES},
    "collections.defaultdict": PickledDefaultdict,
}
# Added to PyTorch's own allow-list (tensors, storages, dtypes, OrderedDict, ...) for the load only.
_SAFE_GLOBALS: list[Any] = [(cls, path) for path, cls in STAND_INS.items()]

_MAX_DEPTH = 200


def _plain(obj: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise NotACheckpointError(f"pickled config nested deeper than {_MAX_DEPTH} levels (a cycle?)")
    if isinstance(obj, PickledConfigNode):
        state = getattr(obj, "state", None)
        if isinstance(state, dict) and "_content" in state:
            return _plain(state["_content"], depth + 1)
        if isinstance(state, dict) and "_val" in state:
            return _plain(state["_val"], depth + 1)
        return None
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return obj


# what PyTorch's weights-only unpickler says when it refuses an instruction (as opposed to unreadable bytes)
_REFUSALS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "call reduce",
    "Can only create new object",
    "Can only build",
    "Can only append",
    "Can only extend",
    "Can only setitem",
    "refusing to call",
)


def _reason(message: str) -> str:
    """The weights-only unpickler's own sentence, without PyTorch's preamble and advice on how to allow more."""
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    if found:
        line = found.group(1)
    else:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        markers = (*_REFUSALS, "Unsupported operand")
        line = next((x for x in lines if any(m in x for m in markers)), lines[-1] if lines else message)
    return re.split(r"\. Please ", line, maxsplit=1)[0].strip().rstrip(".")


def safe_torch_load(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` of an untrusted file on CPU, also accepting the release's pickled
    OmegaConf config (as inert `PickledConfigNode`s)."""
    path = Path(path)
    if not path.is_file():
        raise NotACheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise NotACheckpointError(f"{path}: empty file")
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise NotACheckpointError(f"{path}: corrupt member {bad} (truncated download?)")
        except zipfile.BadZipFile as e:
            raise NotACheckpointError(f"{path}: corrupt zip archive ({e})") from e
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if any(marker in message for marker in _REFUSALS) or (is_zip and "Unsupported operand" in message):
            raise UnsafeCheckpointError(
                f"{path}: refusing to load: {_reason(message)} (only tensors and the release's config are "
                "accepted; nothing in the file was run)"
            ) from None
        raise NotACheckpointError(f"{path}: not a readable torch checkpoint ({_reason(message)})") from None
    except Exception as e:  # malformed data: any error the unpickler or torch's reader raises
        raise NotACheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
