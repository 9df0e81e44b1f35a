"""`index --model release.pth`: the release checkpoint is converted once into the index and searched like
a model directory (the same path `sv.load` takes for a .pth)."""

from __future__ import annotations

import json

import torch

from singularity_vl.checkpoint.release import ours_to_release
from singularity_vl.cli import main
from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import SingularityBase, create_model


def test_index_and_search_with_a_release_pth(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"v{i}.mp4", moving_square_frames(8, 32, 32, seed=i), fps=10, gop=4)
    torch.manual_seed(0)
    model = create_model(tiny_config("retrieval"))
    torch.save({"model": ours_to_release(model)}, tmp_path / "release.pth")
    index = tmp_path / "index"
    args = ["index", str(videos), "--model", str(tmp_path / "release.pth"), "--out", str(index), "--device", "cpu"]
    assert main([*args, "--num-frames", "2", "--workers", "0"]) == 0
    converted = list((index / "models").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    converted_model = SingularityBase.from_pretrained(converted[0])
    torch.testing.assert_close(converted_model.vision_proj.weight, model.vision_proj.weight)
    assert main([*args, "--num-frames", "2", "--workers", "0"]) == 0  # converted once, then reused
    assert len(list((index / "models").iterdir())) == 1
    capsys.readouterr()
    assert main(["search", str(index), "a square", "-k", "3", "--json", "--device", "cpu"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert sorted(h["path"] for h in hits) == ["v0.mp4", "v1.mp4", "v2.mp4"]
