"""`singularity-vl demo --quick`: the whole experiment end to end (synthetic corpus, pre-training, both
fine-tunings, every evaluation setting), the report's schema and the figure."""

from __future__ import annotations

import json

from singularity_vl.cli import main
from singularity_vl.models.losses import ENSEMBLES


def test_quick_demo_writes_the_full_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    tasks = ("template", "label", "static")
    assert set(report["chance_t2v_r1"]) == set(tasks)
    assert abs(report["chance_t2v_r1"]["template"] - 1 / 12) < 1e-3  # 3 test videos per action, 12 actions
    rows = report["results"]
    assert len(rows) == 2 * 3 * 3 * 4
    keys = {(r["model"], r["task"], r["frames"], r["ensemble"]) for r in rows}
    assert keys == {
        (m, t, f, e) for m in ("single_frame", "temporal") for t in tasks for f in (1, 4, 8) for e in ENSEMBLES
    }
    for r in rows:
        for k in ("t2v_r1", "t2v_r5", "v2t_r1", "v2t_r5"):
            assert 0.0 <= r[k] <= 100.0
        assert r["t2v_r1"] <= r["t2v_r5"]
    assert set(report["summary"]) == {*tasks, "checks"}
    assert len(report["summary"]["checks"]) == 4 and all(
        isinstance(v, bool) for v in report["summary"]["checks"].values()
    )
    assert all(r["checkpoint"].endswith(("template/final", "objects/final")) for r in rows)
    # a finished stage keeps its final weights only (its resume checkpoints are ~200 MB each)
    finals = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("final"))
    assert finals == [
        "pretrain",
        "single_frame/objects",
        "single_frame/template",
        "temporal/objects",
        "temporal/template",
    ]
    assert not list(out.rglob("ckpt_*")) and not list(out.rglob("train_state.pt"))
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (out / "report.md").read_text()
    assert table.count("\n| temporal | template |") == 3
    stages = report["stage_seconds"]
    assert list(stages) == ["corpus", "pretrain", *finals[1:], "evaluation"]
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) <= report["seconds"] + 1
    printed = capsys.readouterr().out
    assert "wrote" in printed and "report.json" in printed and "seconds per stage: corpus" in printed
    # a second run reuses every finished stage instead of training again
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done before, reusing") == 5
