"""`singularity-vl evaluate` end to end on generated videos: retrieval, MC and QA, with overrides."""

from __future__ import annotations

import json

import pytest

from singularity_vl.cli import main
from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    for i in range(4):
        write_video(root / f"v{i}.mp4", moving_square_frames(12, 48, 64, seed=i), fps=10, gop=4)
    (root / "ret.json").write_text(
        json.dumps([{"video": f"v{i}.mp4", "caption": [f"square {i} moves", f"clip {i}"]} for i in range(4)])
    )
    (root / "mc.json").write_text(
        json.dumps(
            [{"video": f"v{i}.mp4", "caption": [f"option {j}" for j in range(5)], "answer": i} for i in range(4)]
        )
    )
    (root / "qa.json").write_text(
        json.dumps(
            [{"video": f"v{i}.mp4", "question": "what moves?", "answer": "square", "question_id": i} for i in range(4)]
        )
    )
    (root / "answers.json").write_text(json.dumps(["square", "circle", "red"]))
    models = {}
    for task in ("retrieval", "qa"):
        models[task] = root / f"model_{task}"
        create_model(tiny_config(task)).save_pretrained(models[task])
    return root, models


def test_retrieval(tmp_path, data, capsys):
    root, models = data
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"task: retrieval\ntest_file: ['{root}/ret.json', '{root}', video]\nk_test: 3\nbatch_size: 3\n")
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "--config",
            str(cfg),
            "--checkpoint",
            str(models["retrieval"]),
            "--out",
            str(out),
            "--num-frames",
            "2",
            "--ensemble",
            "mean",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames_test"] == 2 and metrics["ensemble"] == "mean"
    assert set(metrics["reranked"]) >= {"txt_r1", "img_r1", "r_mean"} and "dual_encoder" in metrics
    ranks = json.loads((out / "ranks.json").read_text())
    assert len(ranks["text_to_video_rank"]) == 8 and len(ranks["video_to_text_rank"]) == 4
    expected_r1 = 100 * sum(r == 0 for r in ranks["text_to_video_rank"]) / 8
    assert metrics["reranked"]["img_r1"] == pytest.approx(expected_r1, abs=0.01)


def test_mc_and_qa(tmp_path, data):
    root, models = data
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(models["retrieval"]),
                "--out",
                str(tmp_path / "mc"),
                "task=mc",
                f"test_file=[{root}/mc.json,{root},video]",
                "num_frames_test=1",
            ]
        )
        == 0
    )
    preds = json.loads((tmp_path / "mc" / "predictions.json").read_text())
    acc = json.loads((tmp_path / "mc" / "metrics.json").read_text())["accuracy"]
    assert acc == 100 * sum(p["prediction"] == p["answer"] for p in preds) / 4
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(models["qa"]),
                "--out",
                str(tmp_path / "qa"),
                "task=qa",
                f"test_file=[{root}/qa.json,{root},video]",
                f"answer_list={root}/answers.json",
                "k_test=2",
                "num_frames_test=1",
                "max_q_len=8",
            ]
        )
        == 0
    )
    preds = json.loads((tmp_path / "qa" / "predictions.json").read_text())
    assert [p["question_id"] for p in preds] == [0, 1, 2, 3]
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(models["qa"]),
                "--out",
                str(tmp_path / "gen"),
                "task=qa",
                f"test_file=[{root}/qa.json,{root},video]",
                "qa_generate=true",
                "num_frames_test=1",
                "max_q_len=8",
            ]
        )
        == 0
    )
    gen = json.loads((tmp_path / "gen" / "predictions.json").read_text())
    assert len(gen) == 4 and all(isinstance(p["prediction"], str) for p in gen)
    assert all(p["prediction"] in ("square", "circle", "red") for p in preds)


def test_bad_config_is_a_clear_error(tmp_path, data, capsys):
    root, models = data
    assert main(["evaluate", "--checkpoint", str(models["retrieval"]), "task=bogus", "test_file=[a,b]"]) == 2
    assert "task must be" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(models["retrieval"]), "--config", str(tmp_path / "no.yaml")]) == 2
    env_cfg = tmp_path / "env.yaml"
    env_cfg.write_text("test_file: ['${oc.env:SL_UNSET_VAR_FOR_TEST}/a.json', '/r', video]\n")
    assert main(["evaluate", "--checkpoint", str(models["retrieval"]), "--config", str(env_cfg)]) == 2
    assert "SL_UNSET_VAR_FOR_TEST" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(models["retrieval"]), "k_test=many", "test_file=[a,b]"]) == 2
    (root / "broken.json").write_text(json.dumps([{"video": "missing.mp4", "caption": "x"}] * 2))
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(models["retrieval"]),
                "--out",
                str(tmp_path / "o"),
                f"test_file=[{root}/broken.json,{root},video]",
            ]
        )
        == 2
    )
    assert "could not be read" in capsys.readouterr().err
