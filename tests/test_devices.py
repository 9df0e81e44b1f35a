"""Device handling without a GPU: inputs that come from the data loader on "another device" must be moved
by the code itself before any computation (training, evaluation), devices resolve with clear errors, and
data-loader workers are sized from the machine."""

from __future__ import annotations

import json

import pytest
import torch

from singularity_vl import devices
from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.devices import auto_num_workers, resolve_device, to_device
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model

_METADATA = {"__get__", "size", "dim", "numel", "__len__", "is_pinned", "__repr__", "__format__", "element_size"}


class OffDevice(torch.Tensor):
    """Stands for a tensor on another device than the model's (as a data loader's CPU tensor is for a
    CUDA model): any computation with it raises, as the real mismatch does; `.to(...)` gives a plain
    tensor, the only way in."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        plain = [a.as_subclass(torch.Tensor) if isinstance(a, OffDevice) else a for a in args]
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.pin_memory) or name in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*plain, **kwargs)
        if func in (torch.stack, torch.cat):  # collating on the data side keeps the data side's device
            parts = [a.as_subclass(torch.Tensor) if isinstance(a, OffDevice) else a for a in args[0]]
            with torch._C.DisableTorchFunctionSubclass():
                return func(parts, *args[1:], **kwargs).as_subclass(OffDevice)
        raise RuntimeError(f"{name}() on a tensor that was not moved to the model's device")


def off_device(batch):
    """Every tensor of a batch (dicts, lists) marked as living on another device."""
    if isinstance(batch, torch.Tensor):
        return batch.as_subclass(OffDevice)
    if isinstance(batch, dict):
        return {k: off_device(v) for k, v in batch.items()}
    return batch


def test_off_device_tensors_refuse_computation_until_moved():
    x = off_device(torch.ones(2, 3))
    assert x.shape == (2, 3) and x.dim() == 2
    with pytest.raises(RuntimeError, match="not moved"):
        torch.nn.functional.linear(x, torch.ones(4, 3))
    with pytest.raises(RuntimeError, match="not moved"):
        _ = x + 1
    moved = to_device({"a": x, "n": 3}, "cpu")
    assert type(moved["a"]) is torch.Tensor and moved["n"] == 3
    assert torch.equal(torch.nn.functional.linear(moved["a"], torch.ones(4, 3)), torch.full((2, 4), 3.0))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    for i in range(3):
        write_video(root / f"v{i}.mp4", moving_square_frames(8, 32, 32, seed=i), fps=10, gop=4)
    (root / "ret.json").write_text(json.dumps([{"video": f"v{i}.mp4", "caption": f"square {i}"} for i in range(3)]))
    (root / "qa.json").write_text(
        json.dumps(
            [{"video": f"v{i}.mp4", "question": "what?", "answer": "square", "question_id": i} for i in range(3)]
        )
    )
    (root / "answers.json").write_text(json.dumps(["square", "circle"]))
    return root


def _mark_loader_outputs(monkeypatch, module) -> None:
    """The module's collate and tokenizer hand out off-device tensors, as a CPU data loader does."""
    collate = module.media_collate

    def marked(batch):
        out = collate(batch)  # frames go to the model; `index` is bookkeeping read on the host
        return {**out, "video": off_device(out["video"])} if "video" in out else out

    monkeypatch.setattr(module, "media_collate", marked)
    tokenizer_cls = module.ReleaseTokenizer

    class OffDeviceTokenizer(tokenizer_cls):
        def __call__(self, *a, **k):
            return off_device(super().__call__(*a, **k))

    monkeypatch.setattr(module, "ReleaseTokenizer", OffDeviceTokenizer)


@pytest.mark.parametrize("task", ["retrieval", "qa"])
def test_evaluate_moves_its_inputs(tmp_path, videos, monkeypatch, task):
    from singularity_vl.eval import run
    from singularity_vl.eval.run import EvalConfig, evaluate

    torch.manual_seed(0)
    model = create_model(tiny_config(task)).eval()
    name = "ret" if task == "retrieval" else "qa"
    cfg = EvalConfig(
        task=task,
        test_file=[f"{videos}/{name}.json", str(videos), "video"],
        answer_list=f"{videos}/answers.json" if task == "qa" else None,
        num_frames_test=2,
        batch_size=2,
        k_test=2,
    )
    expected = evaluate(model, cfg, tmp_path / "plain")
    _mark_loader_outputs(monkeypatch, run)
    assert evaluate(model, cfg, tmp_path / "marked") == expected


def test_training_moves_its_inputs(tmp_path, videos, monkeypatch):
    from singularity_vl.data import datasets
    from singularity_vl.train.config import load_train_config
    from singularity_vl.train.loop import Trainer

    def losses(out, marked: bool):
        if marked:
            call = datasets.CaptionCollator.__call__
            monkeypatch.setattr(datasets.CaptionCollator, "__call__", lambda self, b: off_device(call(self, b)))
        cfg = load_train_config(
            None,
            [
                "task=retrieval",
                f"train_file=[[{videos}/ret.json,{videos},video]]",
                f"output_dir={out}",
                "image_res=32",
                "batch_size.video=3",
                "num_workers=0",
                "log_every=1",
                "scheduler.epochs=2",
                "device=cpu",
            ],
        )
        Trainer(cfg).run()
        return [json.loads(line).get("loss") for line in (out / "log.jsonl").read_text().splitlines()]

    expected = losses(tmp_path / "plain", False)
    assert losses(tmp_path / "marked", True) == expected


def test_resolve_device_says_what_is_wrong():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == devices.default_device()
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")


def test_num_workers_auto_is_sized_from_the_machine(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(devices, "available_cpus", lambda: 16)
    assert auto_num_workers("cuda") == 15  # a GPU: every core but one decodes
    assert auto_num_workers("cpu") == 4  # the CPU computes too
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes share the 16 cores
    assert auto_num_workers("cuda") == 3
    monkeypatch.setattr(devices, "available_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert auto_num_workers("cpu") == 0 and auto_num_workers("cuda") == 1
    assert auto_num_workers("cuda", 5) == 5 and auto_num_workers("cpu", "3") == 3
    with pytest.raises(ValueError, match="num_workers"):
        auto_num_workers("cpu", "many")
    with pytest.raises(ValueError, match="num_workers"):
        auto_num_workers("cpu", -1)


def test_fp16_on_cpu_trains_without_a_cuda_grad_scaler(tmp_path, videos):
    from singularity_vl.train.config import load_train_config
    from singularity_vl.train.loop import Trainer

    cfg = load_train_config(
        None,
        [
            "task=retrieval",
            f"train_file=[[{videos}/ret.json,{videos},video]]",
            f"output_dir={tmp_path}",
            "image_res=32",
            "batch_size.video=3",
            "num_workers=0",
            "precision=fp16",
            "scheduler.epochs=1",
            "device=cpu",
        ],
    )
    trainer = Trainer(cfg)
    assert trainer.scaler is None
    assert trainer.run()["global_step"] == 1


def test_from_pretrained_builds_on_the_device_it_is_given(tmp_path):
    model = create_model(tiny_config("retrieval"))
    model.save_pretrained(tmp_path)
    from singularity_vl.models.singularity import SingularityBase

    loaded = SingularityBase.from_pretrained(tmp_path, device="cpu")
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    with pytest.raises(ValueError, match="not a device"):
        SingularityBase.from_pretrained(tmp_path, device="banana")


def test_cli_device_option_reaches_training_and_evaluation(tmp_path, videos, capsys):
    from singularity_vl.cli import main

    spec = f"[[{videos}/ret.json,{videos},video]]"
    assert main(["train", "--device", "banana", f"train_file={spec}", f"output_dir={tmp_path}/t"]) == 2
    assert "banana" in capsys.readouterr().err
    create_model(tiny_config("retrieval")).save_pretrained(tmp_path / "model")
    ev = ["evaluate", "--checkpoint", str(tmp_path / "model"), "--out", str(tmp_path / "e")]
    ev += ["--device", "banana", f"test_file=[{videos}/ret.json,{videos},video]"]
    assert main(ev) == 2
    assert "banana" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*ev[:-3], "--device", "cuda", ev[-1]]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_index_and_search_move_their_inputs(tmp_path, videos, monkeypatch):
    from singularity_vl.search import index as index_module
    from singularity_vl.search.engine import SearchEngine
    from singularity_vl.search.index import build_index

    torch.manual_seed(0)
    create_model(tiny_config("retrieval")).save_pretrained(tmp_path / "model")
    # frames decoded in this process (workers=0): off-device stand-ins cannot cross a worker's queue
    kw = dict(num_frames=2, device="cpu", progress=False, workers=0)
    build_index(videos, tmp_path / "model", tmp_path / "plain", **kw)
    expected = SearchEngine(tmp_path / "plain", device="cpu").search("a square", k=3, rerank=3)

    transform_cls = index_module.EvalTransform

    class OffDeviceTransform(transform_cls):  # decoded frames arrive as the data side's tensors
        def __call__(self, frames):
            return off_device(super().__call__(frames))

    monkeypatch.setattr(index_module, "EvalTransform", OffDeviceTransform)
    build_index(videos, tmp_path / "model", tmp_path / "marked", **kw)
    engine = SearchEngine(tmp_path / "marked", device="cpu")
    load = engine._load
    monkeypatch.setattr(engine, "_load", lambda kind, rows: off_device(load(kind, rows)))
    tokenizer = engine.tokenizer
    monkeypatch.setattr(engine, "tokenizer", lambda *a, **k: off_device(tokenizer(*a, **k)))
    got = engine.search("a square", k=3, rerank=3)
    assert [(h.path, h.score, h.frame) for h in got] == [(h.path, h.score, h.frame) for h in expected]
