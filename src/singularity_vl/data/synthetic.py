"""A procedural video-text corpus where time matters: coloured shapes on varied backgrounds performing
actions that no single frame reveals (left vs right, up vs down, approaching vs receding, clockwise vs
counter-clockwise, appearing vs disappearing, moving-then-stopping vs stopping-then-moving).

Every action draws its start state at random so that the frames of any one action look like the frames
of any other: position, size and angle are uniform over the same ranges whether or not they change.
Captions come in three sets mirroring the SSv2 tasks of the paper: `template` (the action only,
"something moves to the right"), `label` (object and action, "a red square moves to the right") and
`static` (the object only, "a red square"). Opposite actions use different words, not the same words in
another order: MiniLM gives "from left to right" and "from right to left" the same sentence feature
(cosine 1.00 in the demo model as initialised). Directions and sizes use the words of the `frames`
captions below ("top", "bottom", "left", "right", "small", "large"), so what image-text pre-training
grounded in one frame carries over to how it changes (measured: the template ITM left its prior after ~90
instead of ~180 steps; see docs/DEMO.md). Videos are real H.264 mp4 files written with PyAV;
annotations are the release's JSON formats. Deterministic given the seed.

A fourth set, `frames`, is image-text pre-training data: single frames of the training videos saved as
PNG images, captioned with what that one frame shows, including where ("a small red square at the top
left"): what an image-text corpus teaches a model before it ever sees a video.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from singularity_vl.data.video_writer import write_video

ACTIONS: dict[str, str] = {
    "left_to_right": "something moves to the right",
    "right_to_left": "something moves to the left",
    "up": "something moves to the top",
    "down": "something moves to the bottom",
    "approach": "something becomes large",
    "recede": "something becomes small",
    "clockwise": "something turns clockwise",
    "counterclockwise": "something turns counterclockwise",
    "appear": "something appears",
    "disappear": "something disappears",
    "move_then_stop": "something moves and then stops",
    "stop_then_move": "something stands still and then starts moving",
}
SHAPES = ("square", "circle", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (30, 190, 60),
    "blue": (40, 90, 240),
    "yellow": (240, 215, 30),
    "white": (250, 250, 250),
}
TASKS = ("template", "label", "static")

# Ranges shared by every action so single frames do not give the action away (fractions of the frame).
MARGIN = 0.2  # object centres stay in [MARGIN, 1 - MARGIN]
TRAVEL = 0.45  # distance covered by a moving object
SIZE_RANGE = (0.09, 0.2)  # object radius
ZOOM = 1.9  # size ratio between the ends of approaching / receding
TURN = math.radians(80)  # total rotation of turning objects


@dataclass(frozen=True)
class SyntheticConfig:
    """Corpus size and rendering; the test split has `test_per_action` videos per action (as SSv2's
    12 per template)."""

    train_per_action: int = 80
    test_per_action: int = 10
    num_frames: int = 16
    fps: int = 8
    size: int = 64
    seed: int = 0
    frames_per_video: int = 2  # single-frame images (with frame captions) per training video


@dataclass
class VideoSpec:
    """What one video shows; enough to re-render it."""

    name: str
    split: str
    action: str
    shape: str
    colour: str
    background: int
    seed: int

    def captions(self) -> dict[str, str]:
        obj = f"a {self.colour} {self.shape}"
        return {
            "template": ACTIONS[self.action],
            "label": ACTIONS[self.action].replace("something", obj),
            "static": obj,
        }


def _where(x: float, y: float) -> str:
    """Position words for a centre in frame fractions: thirds of the frame, rows first."""
    col = "left" if x < 0.4 else "right" if x > 0.6 else ""
    row = "top" if y < 0.4 else "bottom" if y > 0.6 else ""
    if row and col:
        return f"at the {row} {col}"
    if row:
        return f"at the {row}"
    return f"on the {col}" if col else "in the middle"


def frame_caption(spec: VideoSpec, traj: dict[str, np.ndarray], index: int) -> str:
    """What frame `index` alone shows: size, colour, shape and where ("a small red square at the top left")."""
    r = traj["r"][index]
    size = "small " if r < 0.13 else "large " if r > 0.16 else ""
    return f"a {size}{spec.colour} {spec.shape} {_where(traj['x'][index], traj['y'][index])}"


def frame_choice(spec: VideoSpec, traj: dict[str, np.ndarray], count: int) -> list[int]:
    """The frames of a training video saved as pre-training images: `count` distinct frames where the
    object is visible, drawn from the video's own seed."""
    visible = np.flatnonzero(traj["visible"])
    rng = np.random.default_rng([spec.seed, 1])
    return sorted(int(i) for i in rng.choice(visible, size=min(count, len(visible)), replace=False))


def _smooth(t: np.ndarray) -> np.ndarray:
    return np.clip(t, 0.0, 1.0)


def trajectory(action: str, num_frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame centre (x, y), radius, angle and visibility of the object for `action`."""
    t = np.linspace(0.0, 1.0, num_frames)
    lo, hi = MARGIN, 1.0 - MARGIN
    x = np.full(num_frames, rng.uniform(lo, hi))
    y = np.full(num_frames, rng.uniform(lo, hi))
    r = np.full(num_frames, rng.uniform(*SIZE_RANGE))
    angle = np.full(num_frames, rng.uniform(0, 2 * math.pi))
    visible = np.ones(num_frames, dtype=bool)
    start = rng.uniform(lo, hi - TRAVEL)
    if action in ("left_to_right", "right_to_left"):
        x = start + TRAVEL * (t if action == "left_to_right" else 1 - t)
    elif action in ("down", "up"):  # image rows grow downwards
        y = start + TRAVEL * (t if action == "down" else 1 - t)
    elif action in ("approach", "recede"):
        small = rng.uniform(SIZE_RANGE[0], SIZE_RANGE[1] / ZOOM)
        growth = ZOOM ** (t if action == "approach" else 1 - t)
        r = small * growth
    elif action in ("clockwise", "counterclockwise"):  # clockwise on screen: the angle grows (rows down)
        angle = angle + TURN * (t if action == "clockwise" else -t)
    elif action in ("appear", "disappear"):
        switch = rng.uniform(0.3, 0.7)
        visible = t >= switch if action == "appear" else t < switch
    elif action in ("move_then_stop", "stop_then_move"):
        switch = rng.uniform(0.4, 0.6)
        heading = rng.uniform(0, 2 * math.pi)
        dx, dy = math.cos(heading) * TRAVEL, math.sin(heading) * TRAVEL
        x0 = rng.uniform(lo + max(0, -dx), hi - max(0, dx))
        y0 = rng.uniform(lo + max(0, -dy), hi - max(0, dy))
        if action == "move_then_stop":
            p = _smooth(t / switch)
        else:
            p = _smooth((t - switch) / (1 - switch))
        x, y = x0 + dx * p, y0 + dy * p
    else:
        raise ValueError(f"unknown action {action!r}; known: {sorted(ACTIONS)}")
    return {"x": x, "y": y, "r": r, "angle": angle, "visible": visible}


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (unit radius)."""
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.8
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "triangle":  # vertices at radius 1, pointing up in object coordinates
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3 + math.pi / 3  # outward normal of the edge opposite vertex k
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
        return inside
    if shape == "cross":
        return (np.maximum(abs(u), abs(v)) <= 0.95) & (np.minimum(abs(u), abs(v)) <= 0.32)
    raise ValueError(f"unknown shape {shape!r}")


def _background(index: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One of several low-saturation backgrounds (flat, vertical / horizontal gradient, soft blobs,
    stripes), so that the saturated objects stand out without giving anything else away."""
    kind = index % 5
    base = rng.uniform(60, 150) + rng.uniform(-12, 12, 3)
    other = rng.uniform(60, 150) + rng.uniform(-12, 12, 3)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    if kind == 0:
        img = np.broadcast_to(base, (size, size, 3)).copy()
    elif kind == 1:
        img = base + (other - base) * yy[..., None]
    elif kind == 2:
        img = base + (other - base) * xx[..., None]
    elif kind == 3:
        img = np.broadcast_to(base, (size, size, 3)).copy()
        for _ in range(4):
            cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))[..., None]
            img = img * (1 - 0.6 * w) + other * 0.6 * w
    else:
        period = rng.uniform(0.15, 0.35)
        phase = rng.uniform(0, 1)
        stripes = (np.sin(2 * math.pi * ((xx + yy) / period + phase)) > 0)[..., None]
        img = np.where(stripes, base, base * 0.8 + other * 0.2)
    return img.astype(np.float32)


def render(spec: VideoSpec, cfg: SyntheticConfig) -> list[np.ndarray]:
    """The frames (uint8 H x W x 3) of one video, rendered with 2x2 supersampling."""
    rng = np.random.default_rng(spec.seed)
    traj = trajectory(spec.action, cfg.num_frames, rng)
    bg = _background(spec.background, cfg.size, rng)
    colour = np.array(COLOURS[spec.colour], dtype=np.float32)
    ss = 2
    n = cfg.size * ss
    grid = (np.arange(n) + 0.5) / n
    frames = []
    for f in range(cfg.num_frames):
        img = bg.copy()
        if traj["visible"][f]:
            cx, cy, rad = traj["x"][f], traj["y"][f], traj["r"][f]
            # only the pixel blocks around the object (whole output pixels, so supersampling stays aligned)
            lo_x = max(0, int((cx - 1.1 * rad) * cfg.size))
            hi_x = min(cfg.size, int(math.ceil((cx + 1.1 * rad) * cfg.size)))
            lo_y = max(0, int((cy - 1.1 * rad) * cfg.size))
            hi_y = min(cfg.size, int(math.ceil((cy + 1.1 * rad) * cfg.size)))
            gx, gy = np.meshgrid(grid[lo_x * ss : hi_x * ss], grid[lo_y * ss : hi_y * ss])
            c, s = math.cos(traj["angle"][f]), math.sin(traj["angle"][f])
            u = (c * (gx - cx) + s * (gy - cy)) / rad
            v = (-s * (gx - cx) + c * (gy - cy)) / rad
            inside = _shape_mask(spec.shape, u, v)
            colour_map = np.broadcast_to(colour, (*u.shape, 3))
            if spec.shape == "circle":  # a dark notch so that turning circles are visible too
                notch = ((u - 0.55) ** 2 + v**2 <= 0.09)[..., None]
                colour_map = np.where(notch, colour * 0.35, colour)
            h, w = hi_y - lo_y, hi_x - lo_x
            blocks = inside.reshape(h, ss, w, ss)
            cover = blocks.mean((1, 3))[..., None]
            col = (colour_map * inside[..., None]).reshape(h, ss, w, ss, 3).sum((1, 3))
            col = col / np.maximum(blocks.sum((1, 3))[..., None], 1)
            patch = img[lo_y:hi_y, lo_x:hi_x]
            img[lo_y:hi_y, lo_x:hi_x] = patch * (1 - cover) + col * cover
        frames.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return frames


def plan_corpus(cfg: SyntheticConfig) -> list[VideoSpec]:
    """Every video of the corpus: for each action, `test_per_action` test and `train_per_action` train
    videos with shape, colour and background drawn at random (balanced over actions)."""
    rng = np.random.default_rng(cfg.seed)
    specs = []
    k = 0
    for split, per_action in (("train", cfg.train_per_action), ("test", cfg.test_per_action)):
        for action in ACTIONS:
            for _ in range(per_action):
                specs.append(
                    VideoSpec(
                        name=f"{split}_{k:05d}.mp4",
                        split=split,
                        action=action,
                        shape=SHAPES[int(rng.integers(len(SHAPES)))],
                        colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
                        background=int(rng.integers(1 << 30)),
                        seed=int(rng.integers(1 << 62)),
                    )
                )
                k += 1
    return specs


@dataclass
class CorpusFiles:
    """Where a generated corpus lives: `videos/`, and per task and split a release-format JSON file."""

    root: Path

    @property
    def video_dir(self) -> Path:
        return self.root / "videos"

    def annotation(self, task: str, split: str) -> Path:
        return self.root / "anno" / f"{task}_{split}.json"

    def train_spec(self, task: str) -> list[str]:
        return [str(self.annotation(task, "train")), str(self.video_dir), "video"]

    def test_spec(self, task: str) -> list[str]:
        return [str(self.annotation(task, "test")), str(self.video_dir), "video"]

    @property
    def frame_dir(self) -> Path:
        return self.root / "frames"

    def frames_spec(self) -> list[str]:
        """The single-frame image-text pre-training corpus (`frames` captions)."""
        return [str(self.annotation("frames", "train")), str(self.frame_dir), "image"]

    @property
    def manifest(self) -> Path:
        """`corpus.json`: the generator's config and every video's spec and captions."""
        return self.root / "corpus.json"

    def videos(self) -> dict[str, dict]:
        """Every video's manifest record (spec and captions) by file name, in corpus order."""
        return {v["name"]: v for v in json.loads(self.manifest.read_text())["videos"]}


def _annotations(specs: list[VideoSpec]) -> dict[tuple[str, str], list[dict]]:
    """Train files: one `{"video", "caption"}` per video. Test files: one entry per distinct caption with
    all its videos (`"video": [...]`, several ground truths per query, as the release's SSv2 files)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for task in TASKS:
        out[(task, "train")] = [{"video": s.name, "caption": s.captions()[task]} for s in specs if s.split == "train"]
        groups: dict[str, list[str]] = {}
        for s in specs:
            if s.split == "test":
                groups.setdefault(s.captions()[task], []).append(s.name)
        out[(task, "test")] = [{"video": videos, "caption": cap} for cap, videos in groups.items()]
    return out


def chance_t2v_r1(test_file: Path) -> float:
    """Expected text->video R@1 of random scores: the mean over queries of |ground truth| / |videos|."""
    entries = json.loads(Path(test_file).read_text())
    sizes = [len(e["video"]) if isinstance(e["video"], list) else 1 for e in entries]
    return sum(sizes) / len(sizes) / sum(sizes)


def _render_files(job: tuple[VideoSpec, SyntheticConfig, Path, list[tuple[Path, int]]]) -> None:
    """Render one video, write its mp4 and its pre-training frames (a worker process's unit of work)."""
    spec, cfg, path, images = job
    frames = render(spec, cfg)
    write_video(path, frames, fps=cfg.fps, gop=cfg.num_frames, crf=18)
    for image, i in images:
        Image.fromarray(frames[i]).save(image)


def generate_corpus(
    out: str | Path, cfg: SyntheticConfig = SyntheticConfig(), progress: bool = True, workers: int | None = None
) -> CorpusFiles:
    """Render and encode the corpus under `out` (existing videos with the same spec are kept), write the
    annotation files and `corpus.json` (every video's spec and captions). `workers`: rendering processes
    (default: one per CPU core)."""
    files = CorpusFiles(Path(out))
    files.video_dir.mkdir(parents=True, exist_ok=True)
    (files.root / "anno").mkdir(exist_ok=True)
    specs = plan_corpus(cfg)
    manifest = files.manifest
    previous = json.loads(manifest.read_text()) if manifest.is_file() else None
    same = previous is not None and previous.get("config") == asdict(cfg)
    files.frame_dir.mkdir(exist_ok=True)
    frame_entries = []
    todo = []
    for spec in specs:
        path = files.video_dir / spec.name
        images = []
        if spec.split == "train":
            traj = trajectory(spec.action, cfg.num_frames, np.random.default_rng(spec.seed))  # as `render` draws it
            for i in frame_choice(spec, traj, cfg.frames_per_video):
                images.append((files.frame_dir / f"{path.stem}_{i:02d}.png", i))
                frame_entries.append({"image": images[-1][0].name, "caption": frame_caption(spec, traj, i)})
        if not (same and path.is_file() and all(image.is_file() for image, _ in images)):
            todo.append((spec, cfg, path, images))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    bar = tqdm(
        total=len(specs), initial=len(specs) - len(todo), desc="rendering videos", unit="video", disable=not progress
    )
    # each video is drawn from its own seed, so the files are the same whatever the number of processes;
    # spawned (not forked) workers: the caller may hold torch's thread pools
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_render_files, todo, chunksize=8):
                bar.update(1)
    else:
        for job in todo:
            _render_files(job)
            bar.update(1)
    bar.close()
    annotations = _annotations(specs)
    annotations[("frames", "train")] = frame_entries
    for (task, split), entries in annotations.items():
        files.annotation(task, split).write_text(json.dumps(entries, indent=1) + "\n")
    videos = [{**asdict(s), "captions": s.captions()} for s in specs]
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"config": asdict(cfg), "videos": videos}, indent=1) + "\n")
    tmp.replace(manifest)
    return files
