"""Command line: `singularity-vl <command>`. Each command lives in a small function below."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from singularity_vl.checkpoint.safe_pickle import NotACheckpointError, UnsafeCheckpointError


def _cmd_convert_release(args: argparse.Namespace) -> int:
    from singularity_vl.checkpoint.release import convert_release

    model, report = convert_release(
        args.checkpoint,
        args.out_dir,
        task=args.task,
        num_frames=args.num_frames,
        image_size=args.image_size,
        text_heads=args.text_heads,
    )
    print(report.summary())
    cfg = model.config
    v = cfg.vision
    print(
        f"architecture: {v.backbone} {v.num_layers}x{v.hidden_size} @ {v.image_size}px,"
        f" text {cfg.text.num_layers} layers (fusion from {cfg.text.fusion_layer}),"
        f" temporal embeddings {cfg.temporal.num_frames},"
        f" temporal encoder {cfg.temporal.num_layers if cfg.temporal.enable_encoder else 0} layers"
    )
    print(f"wrote {Path(args.out_dir) / 'model.safetensors'} and config.json")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from singularity_vl.checkpoint.release import load_any

    model = load_any(args.path)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": n, "config": model.config.to_dict()}, indent=2))
    return 0


def _cmd_prepare_videos(args: argparse.Namespace) -> int:
    from singularity_vl.data.prepare_videos import prepare_videos

    summary = prepare_videos(args.src, args.dst, fps=args.fps, size=args.size, trim=args.trim, workers=args.workers)
    print(summary.text())
    return 1 if summary.failed else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from singularity_vl.checkpoint.release import load_any
    from singularity_vl.eval.run import evaluate, load_eval_config

    overrides = list(args.overrides)
    if args.num_frames is not None:
        overrides.append(f"num_frames_test={args.num_frames}")
    if args.ensemble is not None:
        overrides.append(f"eval_frame_ensemble={args.ensemble}")
    cfg = load_eval_config(args.config, overrides)
    task = {"retrieval": "retrieval", "mc": "retrieval", "qa": "qa"}[cfg.task]
    model = load_any(args.checkpoint, task=task)
    result = evaluate(model, cfg, args.out)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from singularity_vl.train.config import load_train_config
    from singularity_vl.train.loop import Trainer

    cfg = load_train_config(args.config, args.overrides)
    summary = Trainer(cfg).run()
    print(json.dumps(summary))
    return 0


def _cmd_smoke(args: argparse.Namespace) -> int:
    from singularity_vl.smoke import run_smoke

    return 0 if run_smoke(Path(args.out), steps=args.steps) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="singularity-vl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert-release",
        help="convert a checkpoint of the original release (.pth) to our format, without running pickled code",
    )
    p.add_argument("checkpoint", help="release .pth file (a torch.save dict with key 'model')")
    p.add_argument("out_dir", help="directory to write config.json + model.safetensors")
    p.add_argument(
        "--task",
        choices=["pretrain", "retrieval", "qa"],
        default=None,
        help="target model (default: the checkpoint's own); pretrain -> retrieval/qa as the release",
    )
    p.add_argument(
        "--num-frames", type=int, default=None, help="cut or zero-extend the temporal embeddings to this many frames"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resample BEiT relative-position-bias tables for this resolution (bicubic)",
    )
    p.add_argument(
        "--text-heads",
        type=int,
        default=None,
        help="text attention heads, if not the vision encoder's (not visible in weights)",
    )
    p.set_defaults(func=_cmd_convert_release)

    p = sub.add_parser("info", help="print the architecture of a model directory or release .pth")
    p.add_argument("path")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "prepare-videos",
        help="re-encode a folder of videos at a lower fps and size, as the release did (resumable, parallel)",
    )
    p.add_argument("src", help="folder of source videos (searched recursively)")
    p.add_argument("dst", help="output folder; the relative layout is kept, files become .mp4")
    p.add_argument("--fps", type=float, default=2.0, help="output frame rate (release: 2)")
    p.add_argument("--size", type=int, default=224, help="shorter side in pixels (release: 224 or 360)")
    p.add_argument("--trim", type=float, default=None, help="keep only the first N seconds (release: DiDeMo)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: up to 4)")
    p.set_defaults(func=_cmd_prepare_videos)

    p = sub.add_parser("train", help="pre-train or fine-tune (one process, or many under torchrun)")
    p.add_argument("--config", default=None, help="YAML training config (see singularity_vl.train.config)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.lr=1e-5 scheduler.epochs=5")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="retrieval / multiple-choice / QA evaluation with the release's metrics")
    p.add_argument("--config", default=None, help="YAML evaluation config (see singularity_vl.eval.run.EvalConfig)")
    p.add_argument("--checkpoint", required=True, help="our model directory or a release .pth (read safely)")
    p.add_argument("--out", default="eval_out", help="directory for metrics.json and ranks/predictions")
    p.add_argument("--num-frames", type=int, default=None, help="test frames per video (overrides the config)")
    p.add_argument("--ensemble", choices=["concat", "mean", "max", "lse"], default=None)
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. k_test=16)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("smoke", help="tiny end-to-end run on CPU: build, train a few steps, save, reload")
    p.add_argument("--out", default="runs/smoke")
    p.add_argument("--steps", type=int, default=30)
    p.set_defaults(func=_cmd_smoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (NotACheckpointError, UnsafeCheckpointError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"singularity-vl {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
