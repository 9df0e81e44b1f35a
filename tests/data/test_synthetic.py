"""The synthetic corpus: deterministic, release-format files, and actions that one frame cannot reveal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from singularity_vl.cli import main
from singularity_vl.data.annotations import load_caption_corpora, load_retrieval_eval
from singularity_vl.data.synthetic import (
    ACTIONS,
    SyntheticConfig,
    VideoSpec,
    chance_t2v_r1,
    frame_caption,
    generate_corpus,
    plan_corpus,
    render,
    trajectory,
)
from singularity_vl.data.video_reader import read_clip

SMALL = SyntheticConfig(train_per_action=2, test_per_action=2, num_frames=8, size=32, seed=5)


def test_corpus_files_load_and_ground_truths(tmp_path):
    files = generate_corpus(tmp_path, SMALL, progress=False)
    assert len(list(files.video_dir.glob("*.mp4"))) == 12 * 4
    template = load_retrieval_eval(files.test_spec("template"), multi_video_gt=True)
    assert len(template.texts) == 12 and all(len(g) == 2 for g in template.text_to_media)
    assert chance_t2v_r1(files.annotation("template", "test")) == pytest.approx(2 / 24)
    manifest = files.videos()
    for text, gts in zip(template.texts, template.text_to_media, strict=True):
        for g in gts:  # every ground-truth video performs that template's action
            spec = manifest[template.media[g].rsplit("/", 1)[1]]
            assert ACTIONS[spec["action"]] == text
    label = load_retrieval_eval(files.test_spec("label"), multi_video_gt=True)
    static = load_retrieval_eval(files.test_spec("static"), multi_video_gt=True)
    assert len(label.media) == len(static.media) == 24
    train = load_caption_corpora([files.train_spec(t) for t in ("template", "label", "static")], multi_video_gt=True)
    assert len(train) == 3 * 24
    clip = read_clip(template.media[0], 4, "middle")
    assert clip.frames.shape == (4, 32, 32, 3)


def test_frame_images_show_what_their_caption_says(tmp_path):
    """The `frames` pre-training set: PNG frames of the training videos, each equal to that frame of the
    video as rendered, captioned with the object and where it is in that frame."""
    files = generate_corpus(tmp_path, SMALL, progress=False)
    corpus = load_caption_corpora([files.frames_spec()])
    assert len(corpus) == 24 * SMALL.frames_per_video
    entries = json.loads(files.annotation("frames", "train").read_text())
    manifest = files.videos()
    for entry in entries:
        video, index = entry["image"].rsplit("_", 1)
        spec = VideoSpec(**{k: v for k, v in manifest[video + ".mp4"].items() if k != "captions"})
        frame = render(spec, SMALL)[int(index[:2])]
        assert np.array_equal(np.asarray(Image.open(files.frame_dir / entry["image"])), frame)
        assert entry["caption"].startswith("a ") and f"{spec.colour} {spec.shape}" in entry["caption"]
    # positions are named from the frame's own trajectory: a left-to-right video's first frame is "left"
    spec = VideoSpec("v.mp4", "train", "left_to_right", "square", "red", 0, 3)
    traj = trajectory(spec.action, 16, np.random.default_rng(spec.seed))
    assert "left" in frame_caption(spec, traj, 0) and "right" in frame_caption(spec, traj, 15)
    # a second run keeps the files and writes the same annotations
    before = files.annotation("frames", "train").read_text()
    generate_corpus(tmp_path, SMALL, progress=False)
    assert files.annotation("frames", "train").read_text() == before


def test_parallel_rendering_writes_the_same_files(tmp_path):
    """Rendering processes change no byte: each video comes from its own seed."""
    one = generate_corpus(tmp_path / "one", SMALL, progress=False, workers=1)
    two = generate_corpus(tmp_path / "two", SMALL, progress=False, workers=2)
    names = sorted(p.relative_to(one.root) for p in one.root.rglob("*") if p.is_file() and p.name != "corpus.json")
    assert len(names) > 2 * len(plan_corpus(SMALL))  # videos, frames and annotations
    assert names == sorted(
        p.relative_to(two.root) for p in two.root.rglob("*") if p.is_file() and p.name != "corpus.json"
    )
    for name in names:
        assert (one.root / name).read_bytes() == (two.root / name).read_bytes(), name


def test_deterministic_by_seed(tmp_path):
    a, b = plan_corpus(SMALL), plan_corpus(SMALL)
    assert a == b
    assert all(np.array_equal(x, y) for x, y in zip(render(a[7], SMALL), render(b[7], SMALL), strict=True))
    other = plan_corpus(SyntheticConfig(**{**SMALL.__dict__, "seed": 6}))
    assert [s.seed for s in other] != [s.seed for s in a]
    assert (
        main(["synth", str(tmp_path / "c"), "--train-per-action", "1", "--test-per-action", "1", "--size", "32"]) == 0
    )
    first = (tmp_path / "c" / "anno" / "label_test.json").read_text()
    assert (
        main(["synth", str(tmp_path / "c"), "--train-per-action", "1", "--test-per-action", "1", "--size", "32"]) == 0
    )
    assert (tmp_path / "c" / "anno" / "label_test.json").read_text() == first


@pytest.mark.parametrize(
    "pair, attribute",
    [
        (("left_to_right", "right_to_left"), "x"),
        (("up", "down"), "y"),
        (("approach", "recede"), "r"),
        (("appear", "disappear"), "visible"),
        (("move_then_stop", "stop_then_move"), "x"),
    ],
)
def test_a_random_frame_does_not_give_the_direction_away(pair, attribute):
    """Over random frames, the attribute that changes has the same distribution in both directions."""
    rng = np.random.default_rng(0)
    values = {}
    for action in pair:
        draws = [trajectory(action, 16, rng)[attribute][rng.integers(16)] for _ in range(3000)]
        values[action] = np.asarray(draws, dtype=float)
    a, b = values[pair[0]], values[pair[1]]
    assert abs(a.mean() - b.mean()) < 0.1 * a.std()
    assert abs(a.std() - b.std()) < 0.1 * a.std()
    # ... while the first and last frames do differ (the action is there, over time)
    first = {act: [trajectory(act, 16, rng)[attribute][0] for _ in range(200)] for act in pair}
    last = {act: [trajectory(act, 16, rng)[attribute][-1] for _ in range(200)] for act in pair}
    delta = {act: np.mean(np.asarray(last[act], float) - np.asarray(first[act], float)) for act in pair}
    if attribute != "x" or pair[0] != "move_then_stop":
        assert np.sign(delta[pair[0]]) == -np.sign(delta[pair[1]]) != 0


def test_rotation_direction():
    rng = np.random.default_rng(0)
    cw, ccw = trajectory("clockwise", 8, rng)["angle"], trajectory("counterclockwise", 8, rng)["angle"]
    assert (np.diff(cw) > 0).all() and (np.diff(ccw) < 0).all()


def test_unknown_action():
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        trajectory("jump", 8, np.random.default_rng(0))
