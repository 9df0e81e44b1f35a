"""Tiny end-to-end training runs on generated data: the loss falls, a killed run resumes to the same
weights, and 2 processes train under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from singularity_vl.cli import main
from singularity_vl.data.video_writer import moving_square_frames, write_video


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("traindata")
    entries = []
    for i in range(8):
        write_video(root / f"v{i}.mp4", moving_square_frames(10, 40, 48, seed=i), fps=10, gop=5)
        entries.append({"video": f"v{i}.mp4", "caption": f"clip number {i} with a square"})
    (root / "train.json").write_text(json.dumps(entries))
    (root / "test.json").write_text(json.dumps(entries[:4]))
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """4 solid-colour videos named by their colour: a set a tiny model learns in a few steps."""
    import numpy as np

    root = tmp_path_factory.mktemp("colours")
    entries = []
    for name, rgb in {
        "red": (220, 20, 20),
        "green": (20, 200, 20),
        "blue": (20, 20, 220),
        "yellow": (230, 230, 20),
    }.items():
        write_video(root / f"{name}.mp4", [np.full((40, 48, 3), rgb, np.uint8)] * 6, fps=10, gop=3)
        entries.append({"video": f"{name}.mp4", "caption": f"a {name} screen"})
    (root / "train.json").write_text(json.dumps(entries))
    return root


HELD_OUT_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "magenta": (210, 40, 210),
    "cyan": (40, 210, 210),
}


@pytest.fixture(scope="module")
def colour_split(tmp_path_factory):
    """6 colours, 5 noisy videos each with its own shade: 4 to train on, 1 held out (the test set)."""
    import numpy as np

    root = tmp_path_factory.mktemp("colour_split")
    rng = np.random.default_rng(0)
    train, test = [], []
    for name, rgb in HELD_OUT_COLOURS.items():
        for k in range(5):
            shade = np.clip(np.array(rgb) + rng.integers(-25, 26, 3), 0, 255)
            frames = [np.clip(shade + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
            write_video(root / f"{name}{k}.mp4", frames, fps=4, gop=4)
            (train if k < 4 else test).append({"video": f"{name}{k}.mp4", "caption": f"a {name} screen"})
    (root / "train.json").write_text(json.dumps(train))
    (root / "test.json").write_text(json.dumps(test))
    return root


@pytest.mark.parametrize("seed", [0, 1])
def test_training_learns_held_out_colours(tmp_path, colour_split, seed):
    """60 steps of retrieval training from scratch retrieve held-out videos by their colour: text->video and
    video->text R@1 of the dual encoder at least 3x chance (1 in 6) on videos it never saw."""
    out = tmp_path / "run"
    extra = [
        f"test_file=[{colour_split}/test.json,{colour_split},video]",
        "batch_size.video=8",
        "scheduler.epochs=20",
        "max_txt_l=8",
        "k_test=6",
        "num_frames_test=1",
        f"seed={seed}",
    ]
    assert main(_args(colour_split, out, *extra)) == 0
    assert len(_losses(out)) == 60
    dual = json.loads((out / "metrics.json").read_text())["test"]["dual_encoder"]
    chance = 100 / len(HELD_OUT_COLOURS)
    assert dual["img_r1"] >= 3 * chance - 0.1 and dual["txt_r1"] >= 3 * chance - 0.1, dual


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "task=retrieval",
        f"train_file=[[{root}/train.json,{root},video]]",
        f"output_dir={out}",
        "model=tiny",
        "image_res=32",
        "batch_size.video=4",
        "num_workers=0",
        "log_every=1",
        "optimizer.lr=5e-4",
        "scheduler.warmup_epochs=0",
        "max_txt_l=10",
        *extra,
    ]


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("task", ["pretrain", "retrieval"])
def test_loss_falls_and_eval_runs(tmp_path, colours, task):
    out = tmp_path / "run"
    assert (
        main(
            _args(
                colours,
                out,
                f"task={task}",
                "scheduler.epochs=20",
                "max_txt_l=8",
                f"test_file=[{colours}/train.json,{colours},video]",
                "k_test=2",
                "num_frames_test=2",
            )
        )
        == 0
    )
    losses = _losses(out)
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert (out / "config.yaml").is_file() and (out / "best" / "model.safetensors").is_file()
    assert (out / "eval_epoch019" / "metrics.json").is_file()
    assert len([p for p in out.iterdir() if p.name.startswith("ckpt_")]) == 2  # keep_last


def test_killed_run_resumes_to_the_same_weights(tmp_path, corpus):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_args(corpus, full, "scheduler.epochs=2")) == 0
    assert main(_args(corpus, part, "scheduler.epochs=2", "max_steps=3")) == 0  # "killed" after 3 steps
    assert main(_args(corpus, part, "scheduler.epochs=2")) == 0  # resume=auto
    a = load_file(str(sorted(full.glob("ckpt_*"))[-1] / "model.safetensors"))
    b = load_file(str(sorted(part.glob("ckpt_*"))[-1] / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_decoded_clip_cache_trains_to_the_same_weights(tmp_path, corpus):
    from singularity_vl.data import video_reader

    plain, cached = tmp_path / "plain", tmp_path / "cached"
    assert main(_args(corpus, plain, "scheduler.epochs=2", "num_frames=2")) == 0
    try:
        assert main(_args(corpus, cached, "scheduler.epochs=2", "num_frames=2", "decoded_clip_cache_mb=16")) == 0
        assert len(video_reader._clip_cache.entries) == 8  # every training video decoded once, kept
    finally:
        video_reader.set_decoded_clip_cache(0)
    a = load_file(str(sorted(plain.glob("ckpt_*"))[-1] / "model.safetensors"))
    b = load_file(str(sorted(cached.glob("ckpt_*"))[-1] / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_fractional_epochs_end_where_the_schedule_ends(tmp_path, corpus):
    out = tmp_path / "run"
    assert main(_args(corpus, out, "scheduler.epochs=1.5")) == 0  # 2 batches per epoch: 3 steps
    assert len(_losses(out)) == 3
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 1


def test_bad_config_errors(tmp_path, capsys):
    assert main(["train", "train_file=[]"]) == 2
    assert "train_file is required" in capsys.readouterr().err
    assert main(["train", "no_such_key=1", "train_file=[[a,b]]"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_torchrun_two_processes(tmp_path, corpus):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "singularity_vl.cli",
        *_args(corpus, out, "scheduler.epochs=1"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_losses(out)) == 1  # 8 samples / 2 ranks / batch 4 = 1 step, logged once by rank 0
    assert len(list(out.glob("ckpt_*"))) == 1


def test_qa_fine_tuning(tmp_path, colours):
    names = ["red", "green", "blue", "yellow"]
    (colours / "qa.json").write_text(
        json.dumps(
            [
                {
                    "video": f"{n}.mp4",
                    "question": "what colour is the screen?",
                    "answer": [n, n, n],
                    "question_id": i,
                }
                for i, n in enumerate(names)
            ]
        )
    )
    (colours / "answers.json").write_text(json.dumps(names + ["bright"]))
    out = tmp_path / "qa"
    assert (
        main(
            [
                "train",
                "task=qa",
                f"train_file=[[{colours}/qa.json,{colours},video]]",
                f"output_dir={out}",
                "model=tiny",
                "image_res=32",
                "batch_size.video=4",
                "num_workers=0",
                "log_every=1",
                "optimizer.lr=5e-4",
                "scheduler.warmup_epochs=0",
                "scheduler.epochs=15",
                "max_q_len=8",
                f"test_file=[{colours}/qa.json,{colours},video]",
                f"answer_list={colours}/answers.json",
                "k_test=3",
                "num_frames_test=1",
            ]
        )
        == 0
    )
    losses = _losses(out)
    assert len(losses) == 15 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    preds = json.loads((out / "eval_epoch014" / "predictions.json").read_text())
    # one ranked answer from the list per question, scored against that question's own answers ("bright" is
    # in the list but answers none, so always answering it scores 0)
    assert sorted(p["question_id"] for p in preds) == [0, 1, 2, 3]
    for p in preds:
        assert p["prediction"] in names + ["bright"]
        assert p["correct"] == (p["prediction"] == names[p["question_id"]])
    accuracy = json.loads((out / "best" / "metrics.json").read_text())["test"]["accuracy"]
    assert accuracy == pytest.approx(100 * sum(p["correct"] for p in preds) / 4, abs=0.01)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path, colours):
    import signal
    import time

    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "singularity_vl.cli", *_args(colours, out, "scheduler.epochs=500")]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "log.jsonl").is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert '"stopped": true' in stdout
    ckpts = sorted(out.glob("ckpt_*"))
    assert ckpts and (ckpts[-1] / "model.safetensors").is_file()


def test_options_bf16_accumulation_clipping_checkpointing_compile(tmp_path, colours, capsys):
    out = tmp_path / "opts"
    assert (
        main(
            _args(
                colours,
                out,
                "task=pretrain",
                "scheduler.epochs=2",
                "max_txt_l=8",
                "precision=bf16",
                "grad_accum=2",
                "optimizer.max_grad_norm=1.0",
                "gradient_checkpointing=true",
                "compile=true",
                "compile_backend=eager",
                "batch_size.video=2",
                "checkpoint_every=1",
                "num_frames=2",
                "itm_reversed_negatives=true",
            )
        )
        == 0
    )
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2 and all(r["loss"] == r["loss"] for r in steps)  # 4 batches / accumulation 2
    assert all(r["grad_norm"] > 0 for r in steps)  # logged when clipping
    assert len(list(out.glob("ckpt_*"))) == 2
    assert "training in bf16 on cpu (precision=bf16)" in capsys.readouterr().out
    compiled = tmp_path / "compiled"  # torch.compile wiring (the eager backend keeps the test fast)
    assert main(_args(colours, compiled, "scheduler.epochs=1", "compile=true", "compile_backend=eager")) == 0
    # `auto` keeps a model this narrow in fp32 on any CPU (bf16 autocast would slow it down)
    assert "training in fp32 on cpu (precision=auto)" in capsys.readouterr().out
    assert len([line for line in (compiled / "log.jsonl").read_text().splitlines() if '"loss"' in line]) == 1


def test_tensorboard_needs_its_package(tmp_path, colours, capsys):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert main(_args(colours, tmp_path / "tb", "tensorboard=true", "scheduler.epochs=1")) == 2
        assert "tensorboard" in capsys.readouterr().err
    else:
        assert main(_args(colours, tmp_path / "tb", "tensorboard=true", "scheduler.epochs=1")) == 0
        assert list((tmp_path / "tb" / "tensorboard").iterdir())


def test_update_pooler_embed_applies_to_a_model_with_temporal_modules(tmp_path, colours):
    """`update_pooler_embed=true` also holds when the model already has its temporal encoder (it picks the
    CLS that feeds ITC, no new weights); it used to be ignored unless the trainer added the encoder."""
    from singularity_vl.models.config import tiny_config
    from singularity_vl.models.singularity import add_temporal_modules, create_model
    from singularity_vl.train.config import load_train_config
    from singularity_vl.train.loop import Trainer

    add_temporal_modules(create_model(tiny_config("retrieval")), 2, 1).save_pretrained(tmp_path / "temporal")
    for flag in (False, True):
        extra = [f"model={tmp_path / 'temporal'}", "num_frames=2", "temporal_layers=1", f"update_pooler_embed={flag}"]
        trainer = Trainer(load_train_config(None, _args(colours, tmp_path / f"run_{flag}", *extra)[1:]))
        assert trainer.model.config.temporal.enable_encoder
        assert trainer.model.config.temporal.update_pooler_embed is flag
