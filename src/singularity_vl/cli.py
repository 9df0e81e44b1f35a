"""singularity-vl: SINGULARITY video-language models from the command line. Fetch the original release's
checkpoints by name, evaluate and fine-tune them, and search your own videos by text.
Run `singularity-vl COMMAND --help` for the options of a command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from singularity_vl.checkpoint.safe_pickle import NotACheckpointError, UnsafeCheckpointError
from singularity_vl.zoo import ZooError


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
    from singularity_vl.api import load_model

    model = load_model(args.path, device="cpu")
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": n, "config": model.config.to_dict()}, indent=2))
    return 0


def _cmd_prepare_videos(args: argparse.Namespace) -> int:
    from singularity_vl.data.prepare_videos import prepare_videos

    summary = prepare_videos(args.src, args.dst, fps=args.fps, size=args.size, trim=args.trim, workers=args.workers)
    print(summary.text())
    return 1 if summary.failed else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from singularity_vl.api import load_model
    from singularity_vl.distributed import init_distributed
    from singularity_vl.eval.run import evaluate, load_eval_config

    overrides = list(args.overrides)
    if args.num_frames is not None:
        overrides.append(f"num_frames_test={args.num_frames}")
    if args.ensemble is not None:
        overrides.append(f"eval_frame_ensemble={args.ensemble}")
    cfg = load_eval_config(args.config, overrides)
    task = {"retrieval": "retrieval", "mc": "retrieval", "qa": "qa"}[cfg.task]
    rank, _, device = init_distributed(args.device)  # under torchrun: this rank's GPU, its share of the work
    model = load_model(args.checkpoint, task=task, device=device)
    result = evaluate(model, cfg, args.out)
    if rank == 0:
        print(json.dumps(result, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from singularity_vl.train.config import load_train_config
    from singularity_vl.train.loop import Trainer

    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    cfg = load_train_config(args.config, overrides)
    summary = Trainer(cfg).run()
    print(json.dumps(summary))
    return 0


def _cmd_smoke(args: argparse.Namespace) -> int:
    from singularity_vl.smoke import run_smoke

    return 0 if run_smoke(Path(args.out), steps=args.steps) else 1


def _cmd_synth(args: argparse.Namespace) -> int:
    from singularity_vl.data.synthetic import SyntheticConfig, generate_corpus

    cfg = SyntheticConfig(
        train_per_action=args.train_per_action,
        test_per_action=args.test_per_action,
        num_frames=args.frames,
        size=args.size,
        seed=args.seed,
    )
    files = generate_corpus(args.out_dir, cfg)
    print(f"wrote {files.video_dir} and the annotations under {files.root / 'anno'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from singularity_vl.demo import DemoSettings, run_demo

    torch_threads(args.threads)
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    run_demo(args.out, settings, seed=args.seed, device=args.device)
    return 0


def _cmd_prepare_image_dataset(args: argparse.Namespace) -> int:
    from singularity_vl.data.converters import images, vqa

    common = {"image_root": args.image_root, "skip_missing": args.skip_missing}
    if args.dataset == "coco":
        summary = images.build_coco(args.karpathy, args.out, **common)
    elif args.dataset == "flickr30k":
        summary = images.build_flickr30k(args.karpathy, args.out, **common)
    else:
        summary = vqa.build_vqa(
            args.train_questions,
            args.train_annotations,
            args.val_questions,
            args.val_annotations,
            args.out,
            test_questions=args.test_questions,
            minival=args.minival,
            num_answers=args.num_answers,
            **common,
        )
    print(summary.text())
    return 0


def _cmd_prepare_images(args: argparse.Namespace) -> int:
    from singularity_vl.data.prepare_images import prepare_images

    summary = prepare_images(args.src, args.dst, size=args.size, workers=args.workers)
    print(summary.text())
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from singularity_vl.data.converters import activitynet, didemo, msrvtt, ssv2

    common = {"video_root": args.video_root, "skip_missing": args.skip_missing}
    if args.video_ext is not None:
        common["video_ext"] = args.video_ext
    name = args.dataset
    if name == "ssv2":
        summary = ssv2.build_ssv2(
            args.labels, args.train, args.validation, args.out, seed=args.seed, per_template=args.per_template, **common
        )
    elif name == "msrvtt-ret":
        summary = msrvtt.build_msrvtt_ret(
            args.videodatainfo, args.train9k, args.test1k, args.out, train7k=args.train7k, **common
        )
    elif name == "msrvtt-qa":
        summary = msrvtt.build_msrvtt_qa(args.qa_dir, args.out, num_answers=args.num_answers, **common)
    elif name == "msrvtt-mc":
        summary = msrvtt.build_msrvtt_mc(args.mc_csv, args.out, **common)
    elif name == "didemo":
        summary = didemo.build_didemo(args.data_dir, args.out, **common)
    elif name == "anet-ret":
        summary = activitynet.build_anet_ret(args.data_dir, args.out, **common)
    else:
        summary = activitynet.build_anet_qa(args.data_dir, args.out, num_answers=args.num_answers, **common)
    print(summary.text())
    return 0


def _prepare_parsers(sub) -> None:
    """`prepare NAME`: one sub-command per dataset, each naming the files it reads and their source."""
    prep = sub.add_parser(
        "prepare",
        help="convert a benchmark's original annotation files to the release's JSON (see docs/DATA.md)",
    )
    datasets = prep.add_subparsers(dest="dataset", required=True)

    def add(name: str, help_: str, ext: str):
        p = datasets.add_parser(
            name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("--out", required=True, help="folder for the JSON files (e.g. $SL_DATA_DIR/anno_downstream)")
        p.add_argument("--video-root", default=None, help="check that every referenced video exists here")
        p.add_argument("--video-ext", default=None, help=f"extension of the video files (default {ext})")
        p.add_argument("--skip-missing", action="store_true", help="drop entries whose video is missing (counted)")
        p.set_defaults(func=_cmd_prepare)
        return p

    p = add(
        "ssv2",
        "Something-Something v2 template and label retrieval (the paper's temporal tasks). Files from the\n"
        "20BN/Qualcomm SSv2 download: something-something-v2-labels.json, -train.json, -validation.json.",
        ".webm",
    )
    p.add_argument("--labels", required=True, help="something-something-v2-labels.json (template -> class id)")
    p.add_argument("--train", required=True, help="something-something-v2-train.json")
    p.add_argument("--validation", required=True, help="something-something-v2-validation.json")
    p.add_argument("--seed", type=int, default=0, help="which validation videos make the test set")
    p.add_argument("--per-template", type=int, default=12, help="test videos per template (paper: 12)")

    p = add(
        "msrvtt-ret",
        "MSRVTT retrieval: captions from MSR-VTT's train_val_videodatainfo.json + test_videodatainfo.json\n"
        "(or MSRVTT_data.json), splits MSRVTT_train.9k.csv / MSRVTT_train.7k.csv / MSRVTT_JSFUS_test.csv\n"
        "(the 1k-A split of Yu et al. 2018, distributed with CLIP4Clip's msrvtt_data.zip).",
        ".mp4",
    )
    p.add_argument("--videodatainfo", nargs="+", required=True, help="one or more *videodatainfo.json files")
    p.add_argument("--train9k", required=True, help="MSRVTT_train.9k.csv")
    p.add_argument("--train7k", default=None, help="MSRVTT_train.7k.csv (optional)")
    p.add_argument("--test1k", required=True, help="MSRVTT_JSFUS_test.csv")

    p = add(
        "msrvtt-qa",
        "MSRVTT-QA (Xu et al. 2017): a folder with train_qa.json, val_qa.json, test_qa.json.",
        ".mp4",
    )
    p.add_argument("--qa-dir", required=True)
    p.add_argument("--num-answers", type=int, default=1500, help="answer-list size (most frequent train answers)")

    p = add("msrvtt-mc", "MSRVTT multiple choice (JSFusion, Yu et al. 2018): MSRVTT_MC_test.csv.", ".mp4")
    p.add_argument("--mc-csv", required=True, help="CSV with video_id, a1..a5, answer (0-based index)")

    p = add(
        "didemo",
        "DiDeMo paragraph retrieval (Hendricks et al. 2017, github.com/LisaAnne/LocalizingMoments):\n"
        "a folder with train_data.json, val_data.json, test_data.json.",
        ".mp4",
    )
    p.add_argument("--data-dir", required=True)

    p = add(
        "anet-ret",
        "ActivityNet Captions paragraph retrieval (Krishna et al. 2017): a folder with train.json, val_1.json.",
        ".mp4",
    )
    p.add_argument("--data-dir", required=True)

    p = add(
        "anet-qa",
        "ActivityNet-QA (Yu et al. 2019, github.com/MILVLG/activitynet-qa): a folder with\n"
        "{train,val,test}_q.json and {train,val,test}_a.json.",
        ".mp4",
    )
    p.add_argument("--data-dir", required=True)
    p.add_argument("--num-answers", type=int, default=1500, help="answer-list size (most frequent train answers)")

    def add_image(name: str, help_: str):
        p = datasets.add_parser(
            name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("--out", required=True, help="folder for the JSON files (e.g. $SL_DATA_DIR/anno_downstream)")
        p.add_argument("--image-root", default=None, help="check that every referenced image exists here")
        p.add_argument("--skip-missing", action="store_true", help="drop entries whose image is missing (counted)")
        p.set_defaults(func=_cmd_prepare_image_dataset)
        return p

    p = add_image(
        "coco",
        "COCO retrieval on the Karpathy splits: dataset_coco.json (Karpathy & Fei-Fei 2015); image paths\n"
        "train2014/... and val2014/... under the COCO image folder.",
    )
    p.add_argument("--karpathy", required=True, help="dataset_coco.json")
    p = add_image("flickr30k", "Flickr30K retrieval on the Karpathy splits: dataset_flickr30k.json.")
    p.add_argument("--karpathy", required=True, help="dataset_flickr30k.json")
    p = add_image(
        "vqa",
        "VQA v2: v2_OpenEnded_mscoco_{train2014,val2014}_questions.json, v2_mscoco_{train2014,val2014}_\n"
        "annotations.json, optionally the test-dev2015 questions and a minival question-id list.",
    )
    p.add_argument("--train-questions", required=True)
    p.add_argument("--train-annotations", required=True)
    p.add_argument("--val-questions", required=True)
    p.add_argument("--val-annotations", required=True)
    p.add_argument("--test-questions", default=None, help="test-dev2015 (or test2015) questions, for submission")
    p.add_argument("--minival", default=None, help="JSON list of minival question ids (or entries with one)")
    p.add_argument("--num-answers", type=int, default=3128, help="answer-list size (most frequent majority answers)")


def _cmd_download(args: argparse.Namespace) -> int:
    from singularity_vl.zoo import prepare

    for name, path in prepare(args.name, progress=not args.quiet).items():
        print(f"{name}  {path}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from singularity_vl.zoo import cache_dir, list_models

    rows = list_models()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['task']:<9}  {r['status']:<14}  {r['about']}")
    print(f"\ncache: {cache_dir()} (set SINGULARITY_VL_HOME to move it)")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from singularity_vl.api import resolve
    from singularity_vl.search.index import build_index

    summary = build_index(
        args.video_dir,
        resolve(args.model),
        args.out,
        num_frames=args.num_frames,
        batch_size=args.batch_size,
        rebuild=args.rebuild,
        wait=args.wait,
        device=args.device,
        workers=args.workers,
    )
    print(summary.text())
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from singularity_vl.search.engine import SearchEngine, hits_to_json

    engine = SearchEngine(args.index_dir, device=args.device)
    hits = engine.search(args.query, k=args.k, rerank=args.rerank, ensemble=args.ensemble)
    if args.json:
        print(json.dumps(hits_to_json(args.query, hits), indent=1))
        return 0
    if not hits:
        print("no results (is the index empty?)")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:3d}. {h.score:8.3f}  {h.path}  (best frame at {h.time:.2f} s of {h.duration:.2f} s)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from singularity_vl.search.engine import SearchEngine
    from singularity_vl.search.server import ServerLimits, make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    engine = SearchEngine(args.index_dir, device=args.device)
    limits = ServerLimits(workers=args.workers)
    server = make_server(engine, args.host, args.port, allowed_hosts=args.allowed_host, limits=limits)
    host, port = server.server_address[:2]
    print(f"serving {len(engine)} indexed files on http://{host}:{port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default=None, help="where to compute: cpu, cuda, cuda:N (default: cuda when a GPU is visible)"
    )


def torch_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="singularity-vl", description=__doc__)
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("SINGULARITY_VL_DEBUG", "") not in ("", "0"),
        help="on an error, print the full traceback, not only its message (or set SINGULARITY_VL_DEBUG=1)",
    )
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

    p = sub.add_parser(
        "download",
        help="download one archive of the original release's checkpoints and convert each model in it",
        description="Download (resuming an interrupted download), unpack and convert one archive of the"
        " original release; its models then load by name (`singularity-vl models` lists them) and work offline."
        " Cache: $SINGULARITY_VL_HOME, else $XDG_CACHE_HOME/singularity-vl; mirror: $SINGULARITY_VL_BASE_URL.",
    )
    p.add_argument("name", help="archive name, e.g. msrvtt_ret (see `singularity-vl models`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("models", help="list the release's checkpoints: archives to download and converted models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("info", help="print the architecture of a model (directory, release .pth or model name)")
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

    p = sub.add_parser(
        "prepare-images",
        help="resize a folder of images to a 224 px shorter side, as the release did (resumable, parallel)",
    )
    p.add_argument("src", help="folder of source images (searched recursively)")
    p.add_argument("dst", help="output folder; the relative layout and file formats are kept")
    p.add_argument("--size", type=int, default=224, help="shorter side in pixels (release: 224)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: up to 4)")
    p.set_defaults(func=_cmd_prepare_images)

    p = sub.add_parser("train", help="pre-train or fine-tune (one process, or many under torchrun)")
    p.add_argument("--config", default=None, help="YAML training config (see singularity_vl.train.config)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.lr=1e-5 scheduler.epochs=5")
    _add_device(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="retrieval / multiple-choice / QA evaluation with the release's metrics")
    p.add_argument("--config", default=None, help="YAML evaluation config (see singularity_vl.eval.run.EvalConfig)")
    p.add_argument("--checkpoint", required=True, help="model folder, release .pth or release model name")
    p.add_argument("--out", default="eval_out", help="directory for metrics.json and ranks/predictions")
    p.add_argument("--num-frames", type=int, default=None, help="test frames per video (overrides the config)")
    p.add_argument("--ensemble", choices=["concat", "mean", "max", "lse"], default=None)
    p.add_argument("overrides", nargs="*", help="config overrides as key=value (e.g. k_test=16)")
    _add_device(p)
    p.set_defaults(func=_cmd_evaluate)

    _prepare_parsers(sub)

    p = sub.add_parser("index", help="index a folder of videos and images for text search (incremental)")
    p.add_argument("video_dir")
    p.add_argument("--model", required=True, help="a retrieval model: directory, or release model name")
    p.add_argument("--out", required=True, help="index directory (index.db + shards/)")
    p.add_argument("--num-frames", type=int, default=8, help="frames sampled per video")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rebuild", action="store_true", help="start over when the model or settings changed")
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for another indexer of --out"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="processes decoding ahead of the encoder (default: cores - 1, max 4)"
    )
    _add_device(p)
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="text-to-video search in an index")
    p.add_argument("index_dir")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10, help="results to show (at most 50)")
    p.add_argument("--rerank", type=int, default=64, help="candidates re-ranked by ITM (0: dual encoder only)")
    p.add_argument("--ensemble", choices=["concat", "mean", "max", "lse"], default="concat")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_device(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("serve", help="web page and JSON API over an index")
    p.add_argument("index_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (repeatable; '*' turns the Host check off)",
    )
    p.add_argument("--workers", type=int, default=8, help="request threads (more waiting requests get 503)")
    _add_device(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "synth", help="write the synthetic video-text corpus (mp4 + release-format JSON; deterministic by seed)"
    )
    p.add_argument("out_dir")
    p.add_argument("--train-per-action", type=int, default=80, help="training videos per action (12 actions)")
    p.add_argument("--test-per-action", type=int, default=10, help="test videos per action")
    p.add_argument("--frames", type=int, default=16, help="frames per video (8 fps)")
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "demo",
        help="the single-frame-bias experiment on CPU: synthetic corpus, pre-train, fine-tune a single-frame"
        " and a temporal model, evaluate, write report.json / report.png",
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a much smaller run (about 2 minutes) for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _add_device(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("smoke", help="tiny end-to-end run on CPU: build, train a few steps, save, reload")
    p.add_argument("--out", default="runs/smoke")
    p.add_argument("--steps", type=int, default=30)
    p.set_defaults(func=_cmd_smoke)
    for command in sub.choices.values():  # `--debug` after the command works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (NotACheckpointError, UnsafeCheckpointError, ZooError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (--debug shows where)"
        print(f"singularity-vl {args.command}: error: {msg}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
