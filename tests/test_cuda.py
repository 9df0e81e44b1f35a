"""On a CUDA GPU (skipped elsewhere; `scripts/gpu_check.sh` runs these): models load onto the GPU,
evaluation there gives the CPU's scores in fp32, training steps run in bf16, the data loader feeds
pinned batches, and re-ranking never moves a whole test set to the GPU with `eval_offload`."""

from __future__ import annotations

import json

import pytest
import torch

from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.eval.run import EvalConfig, evaluate
from singularity_vl.models.config import preset, tiny_config
from singularity_vl.models.singularity import SingularityBase, create_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    for i in range(6):
        write_video(root / f"v{i}.mp4", moving_square_frames(16, 120, 160, seed=i), fps=10, gop=8)
    (root / "ret.json").write_text(
        json.dumps([{"video": f"v{i}.mp4", "caption": [f"square {i} moves", f"clip {i}"]} for i in range(6)])
    )
    (root / "qa.json").write_text(
        json.dumps(
            [{"video": f"v{i}.mp4", "question": "what moves?", "answer": "square", "question_id": i} for i in range(6)]
        )
    )
    (root / "answers.json").write_text(json.dumps(["square", "circle", "red", "a dog"]))
    return root


def _ranks(out) -> dict:
    return json.loads((out / "ranks.json").read_text())


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_evaluate_on_gpu_equals_cpu_in_fp32(tmp_path, data, size):
    torch.manual_seed(0)
    config = tiny_config("retrieval") if size == "tiny" else preset("base", "retrieval")
    create_model(config).save_pretrained(tmp_path / "model")
    cfg = EvalConfig(
        test_file=[f"{data}/ret.json", str(data), "video"], num_frames_test=4, batch_size=4, k_test=4, precision="fp32"
    )
    cpu = evaluate(SingularityBase.from_pretrained(tmp_path / "model", device="cpu"), cfg, tmp_path / "cpu")
    gpu_model = SingularityBase.from_pretrained(tmp_path / "model", device="cuda")
    assert {p.device.type for p in gpu_model.parameters()} == {"cuda"}
    gpu = evaluate(gpu_model, cfg, tmp_path / "gpu")
    for direction in ("reranked", "dual_encoder"):
        for key, value in cpu[direction].items():
            assert gpu[direction][key] == pytest.approx(value, abs=1e-4), (direction, key)
    # the scores themselves, through the re-ranking path
    from singularity_vl.data.annotations import load_retrieval_eval
    from singularity_vl.data.text import ReleaseTokenizer
    from singularity_vl.eval.retrieval import rerank
    from singularity_vl.eval.run import encode_media, encode_text_list

    ev = load_retrieval_eval(cfg.test_file)
    scores = {}
    for device in ("cpu", "cuda"):
        model = SingularityBase.from_pretrained(tmp_path / "model", device=device).eval()
        texts = encode_text_list(model, ReleaseTokenizer(), ev.texts, 32)
        videos = encode_media(model, ev.media, cfg, model.config.vision.image_size, progress=False)
        scores[device] = rerank(model, texts, videos, k_test=4).v2t_x
    torch.testing.assert_close(scores["cuda"], scores["cpu"], rtol=0, atol=1e-4)


def test_offloaded_bf16_evaluation_on_gpu(tmp_path, data):
    torch.manual_seed(0)
    create_model(tiny_config("retrieval")).save_pretrained(tmp_path / "model")
    model = SingularityBase.from_pretrained(tmp_path / "model", device="cuda")
    spec = [f"{data}/ret.json", str(data), "video"]
    exact = evaluate(model, EvalConfig(test_file=spec, num_frames_test=4, precision="fp32"), None)
    fast = evaluate(
        model, EvalConfig(test_file=spec, num_frames_test=4, precision="bf16", eval_offload=True), tmp_path / "b"
    )
    assert set(fast["reranked"]) == set(exact["reranked"])


def test_qa_evaluation_on_gpu(tmp_path, data):
    torch.manual_seed(0)
    create_model(tiny_config("qa")).save_pretrained(tmp_path / "model")
    cfg = EvalConfig(
        task="qa",
        test_file=[f"{data}/qa.json", str(data), "video"],
        answer_list=f"{data}/answers.json",
        num_frames_test=2,
        k_test=3,
        precision="fp32",
    )
    cpu = evaluate(SingularityBase.from_pretrained(tmp_path / "model", device="cpu"), cfg, tmp_path / "cpu")
    gpu = evaluate(SingularityBase.from_pretrained(tmp_path / "model", device="cuda"), cfg, tmp_path / "gpu")
    assert gpu == cpu


def test_training_steps_on_gpu_in_bf16(tmp_path, data):
    from singularity_vl.train.config import load_train_config
    from singularity_vl.train.loop import Trainer

    cfg = load_train_config(
        None,
        [
            "task=retrieval",
            f"train_file=[[{data}/ret.json,{data},video]]",
            f"test_file=[{data}/ret.json,{data},video]",
            f"output_dir={tmp_path}",
            "image_res=64",
            "batch_size.video=3",
            "num_frames=2",
            "scheduler.epochs=2",
            "precision=bf16",
            "device=cuda",
            "log_every=1",
        ],
    )
    trainer = Trainer(cfg)
    assert trainer.device.type == "cuda" and trainer.num_workers >= 1
    summary = trainer.run()
    assert summary["global_step"] == 4 and (tmp_path / "best" / "model.safetensors").is_file()
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert all(loss == loss for loss in losses)  # finite


def test_search_index_on_gpu(tmp_path, data):
    from singularity_vl.search.engine import SearchEngine
    from singularity_vl.search.index import build_index

    torch.manual_seed(0)
    create_model(tiny_config("retrieval")).save_pretrained(tmp_path / "model")
    build_index(data, tmp_path / "model", tmp_path / "index", num_frames=2, device="cuda")
    hits = SearchEngine(tmp_path / "index", device="cuda").search("a square moves", k=3, rerank=4)
    assert len(hits) == 3
