"""Smoke test of an installed wheel, run by `.ci/run` in a fresh virtual environment outside the checkout:
the public API and the command line work with nothing but `pip install singularity_vl-*.whl`.

    python tests/wheel_smoke.py WORK_DIR
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> str:
    cli = shutil.which("singularity-vl") or str(Path(sys.executable).with_name("singularity-vl"))
    out = subprocess.run([cli, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"singularity-vl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def main(work: Path) -> None:
    import singularity_vl as sv

    source = Path(sv.__file__).resolve()
    assert "site-packages" in source.parts, f"not the installed package: {source}"
    assert sv.__version__[0].isdigit(), sv.__version__

    import torch

    from singularity_vl.configs import resolve_config
    from singularity_vl.data.video_writer import moving_square_frames, write_video
    from singularity_vl.models.config import tiny_config
    from singularity_vl.models.singularity import create_model

    torch.manual_seed(0)
    model_dir = work / "tiny_model"
    create_model(tiny_config("retrieval", temporal=True)).save_pretrained(model_dir)
    videos = work / "videos"
    videos.mkdir(parents=True)
    for seed in range(3):
        write_video(videos / f"clip{seed}.mp4", moving_square_frames(12, seed=seed), fps=6)

    # the API
    model, transform, tokenizer = sv.load(model_dir, device="cpu")
    assert tokenizer("a dog catches a frisbee")["input_ids"][0, :3].tolist() == [101, 1037, 3899]  # shipped vocab
    t = model.embed_text(["a dog catches a frisbee", "a red square"])
    v = model.embed_video(sorted(videos.glob("*.mp4")), num_frames=4)
    s = model.score([videos / "clip0.mp4"], ["a dog catches a frisbee", "a red square"])
    assert t.shape == (2, model.config.embed_dim) and v.shape == (3, model.config.embed_dim) and s.shape == (1, 2)
    assert resolve_config("ret_msrvtt").is_file()  # the recipes ship inside

    # the command line
    assert "download" in run("--help")
    assert "msrvtt_ret" in run("models")
    assert json.loads(run("info", str(model_dir)))["config"]["task"] == "retrieval"
    print(run("index", str(videos), "--model", str(model_dir), "--out", str(work / "index"), "--num-frames", "2"))
    hits = json.loads(run("search", str(work / "index"), "a red square", "--json", "-k", "3"))["results"]
    assert len(hits) == 3, hits
    print(f"wheel smoke passed: singularity-vl {sv.__version__} from {source.parent}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
