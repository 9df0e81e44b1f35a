"""The release-checkpoint loader refuses every known way a pickle runs code, and still loads what the release
saves: tensors, optimizer/scheduler states and a pickled OmegaConf config (as inert data)."""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from singularity_vl.checkpoint.release import read_release_checkpoint
from singularity_vl.checkpoint.safe_pickle import (
    NotACheckpointError,
    PickledConfigNode,
    UnsafeCheckpointError,
    safe_torch_load,
)

DATA = Path(__file__).resolve().parent / "data"


def _torch_file(path: Path, payload: bytes) -> Path:
    """A torch zip checkpoint whose `data.pkl` is `payload` (the other records from a real `torch.save`)."""
    real = path.with_suffix(".real")
    torch.save({"t": torch.zeros(2)}, real)
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, payload if info.filename.endswith("/data.pkl") else src.read(info))
    real.unlink()
    return path


def _p2(body: bytes) -> bytes:
    """A protocol-2 pickle of `body` (raw opcodes) ending in STOP."""
    return b"\x80\x02" + body + b"."


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw  # BINUNICODE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(module: str, name: str, *args: bytes) -> bytes:
    """GLOBAL module.name, args as a tuple, REDUCE: `module.name(*args)`."""
    return _global(module, name) + b"(" + b"".join(args) + b"tR"


def _escapes(marker: Path) -> dict[str, tuple[bytes, str]]:
    """Pickles that run code or build classes if unpickled freely: (payload, a word the refusal must name)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        # nested globals: a call hidden in a dict value next to real tensors' names
        "os.system": (_p2(b"}" + _str("model") + _call("os", "system", _str(f"touch {marker}")) + b"s"), "system"),
        "posix.system": (_p2(_call("posix", "system", _str(f"touch {marker}"))), "system"),
        "builtins.eval": (_p2(_call("builtins", "eval", _str(touch))), "eval"),
        "builtins.exec": (_p2(_call("__builtin__", "exec", _str(touch))), "exec"),
        "subprocess.call": (
            _p2(_call("subprocess", "call", b"]" + b"(" + _str("touch") + _str(str(marker)) + b"e")),
            "subprocess",
        ),
        "builtins.getattr": (
            _p2(_call("builtins", "getattr", _global("torch", "Tensor") + _str("__init__"))),
            "getattr",
        ),
        # a REDUCE on a name that is allowed as data: the config stand-ins and typing.Any refuse to be called
        "reduce DictConfig": (_p2(_call("omegaconf.dictconfig", "DictConfig", _str("x"))), "DictConfig"),
        "reduce typing.Any": (_p2(_call("typing", "Any", _str("x"))), "Any"),
        "defaultdict(os.system)": (_p2(_call("collections", "defaultdict", _global("os", "system"))), "system"),
        # class construction: type(name, bases, dict), copyreg._reconstructor, object.__new__
        "builtins.type": (
            _p2(_call("builtins", "type", _str("X") + b"(" + _global("builtins", "object") + b"t}")),
            "type",
        ),
        "copyreg._reconstructor": (
            _p2(
                _call(
                    "copyreg",
                    "_reconstructor",
                    _global("collections", "OrderedDict") + _global("builtins", "dict") + b"N",
                )
            ),
            "_reconstructor",
        ),
        "copyreg.__newobj__": (_p2(_call("copyreg", "__newobj__", _global("builtins", "object"))), "__newobj__"),
        "NEWOBJ object": (_p2(_global("builtins", "object") + b")\x81"), "object"),
        # BUILD on an instance of a class that is not allowed (here a plain dict): no __dict__ / setattr games
        "BUILD on dict": (
            _p2(b"}" + b"}" + _str("__class__") + _global("collections", "OrderedDict") + b"sb"),
            "build",
        ),
        # opcodes the weights-only unpickler does not implement at all
        "INST": (b"(" + _str(f"touch {marker}") + b"ios\nsystem\n.", "Unsupported operand"),
        "STACK_GLOBAL": (b"\x80\x04\x8c\x02os\x8c\x06system\x93" + _str("true") + b"\x85R.", "Unsupported operand"),
        "EXT1": (_p2(b"\x82\x01"), "Unsupported operand"),
    }


def test_the_escapes_are_real(tmp_path):
    """Unpickled by plain `pickle`, the payloads do run code (so refusing them below means something)."""
    marker = tmp_path / "ran"
    payloads = _escapes(marker)
    for name in ("os.system", "builtins.eval", "subprocess.call"):
        pickle.loads(payloads[name][0])
        assert marker.exists(), name
        marker.unlink()
    cls = pickle.loads(payloads["builtins.type"][0])
    assert isinstance(cls, type) and cls.__name__ == "X"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("name", list(_escapes(Path("m"))))
def test_every_escape_is_refused(tmp_path, name):
    marker = tmp_path / "ran"
    payload, word = _escapes(marker)[name]
    path = _torch_file(tmp_path / "evil.pth", payload)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_torch_load(path)
    message = str(err.value)
    assert str(path) in message and "refusing" in message and "nothing in the file was run" in message
    assert word.lower() in message.lower(), message
    assert "Weights only load failed" not in message and "trusted source" not in message  # no advice to trust it
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        read_release_checkpoint(path)


def test_build_on_a_config_stand_in_stays_data(tmp_path):
    """A BUILD whose state names `__class__` / `__reduce__` only becomes the stand-in's stored state."""
    body = b"}" + _str("config") + _global("omegaconf.dictconfig", "DictConfig") + b")\x81"
    body += b"}(" + _str("__class__") + _global("collections", "OrderedDict") + _str("_content") + b"}ub" + b"s"
    loaded = safe_torch_load(_torch_file(tmp_path / "c.pth", _p2(body)))
    node = loaded["config"]
    assert isinstance(node, PickledConfigNode) and type(node).qualname == "omegaconf.dictconfig.DictConfig"
    assert node.state["__class__"] is collections.OrderedDict and node.to_plain() == {}


def test_release_checkpoint_with_omegaconf_2_1_1_config_loads():
    """`data/omegaconf_2_1_1_checkpoint.pth`: saved with the release's layout (model, AdamW, LambdaLR, scaler,
    config, epoch, global_step) under OmegaConf 2.1.1, the version the release pins."""
    obj = safe_torch_load(DATA / "omegaconf_2_1_1_checkpoint.pth")
    assert set(obj) == {"model", "optimizer", "scheduler", "scaler", "config", "epoch", "global_step"}
    assert obj["model"]["weight"].shape == (2, 4) and obj["optimizer"]["state"][0]["exp_avg"].shape == (2, 4)
    assert obj["scheduler"]["last_epoch"] == 0 and obj["scaler"]["scale"] == 65536.0
    state, config = read_release_checkpoint(DATA / "omegaconf_2_1_1_checkpoint.pth")
    assert set(state) == {"weight", "bias"}
    assert config["video_input"] == {"num_frames": 1, "sample_type": "rand", "num_frames_test": 4}
    assert config["train_file"] == ["${data_root}/train.json", "${data_root}/videos", "video"]  # not resolved
    assert config["output_dir"] is None and config["temp"] == 0.07 and config["evaluate"] is False
    assert config["temporal_vision_encoder"]["num_layers"] == 2


def test_checkpoint_saved_with_installed_omegaconf_loads(tmp_path):
    """Tensors plus an OmegaConf config of every value kind, as `torch.save` writes them today."""
    raw = {"a": 1, "b": [1, 2.5, "x", None, {"c": True}], "d": {"e": "${a}", "f": None}, "g": "None"}
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "today.pth"
    torch.save({"model": model.state_dict(), "config": OmegaConf.create(raw), "epoch": 3}, path)
    state, config = read_release_checkpoint(path)
    assert config == raw
    torch.testing.assert_close(state["weight"], model.weight.detach())


def test_refusals_leave_torch_allow_list_as_it_was(tmp_path):
    """The extra globals are allowed only during our load: plain `torch.load(weights_only=True)` still refuses
    a pickled OmegaConf config afterwards."""
    path = tmp_path / "cfg.pth"
    torch.save({"config": OmegaConf.create({"a": 1})}, path)
    safe_torch_load(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_unreadable_files_are_not_called_unsafe(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(NotACheckpointError, match="junk.pth"):
        safe_torch_load(junk)
