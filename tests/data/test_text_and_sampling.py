"""Frame sampling against hand-computed cases; caption cleaning and tokenisation against the release."""

from __future__ import annotations

import json
import random

import pytest
import torch

from singularity_vl.data.sampling import sample_frame_indices
from singularity_vl.data.text import ReleaseTokenizer, pre_text


def test_middle_hand_computed():
    # vlen 10, 4 segments: bounds 0,2,5,7,10 -> (0,1),(2,4),(5,6),(7,9) -> middles 0,3,5,8
    assert sample_frame_indices(4, 10, "middle") == [0, 3, 5, 8]
    assert sample_frame_indices(1, 9, "middle") == [4]
    assert sample_frame_indices(12, 300, "middle")[:3] == [12, 37, 62]


def test_rand_never_takes_a_segment_last_frame():
    rng = random.Random(0)
    seen = set()
    for _ in range(500):
        idx = sample_frame_indices(4, 10, "rand", rng)
        assert 0 <= idx[0] <= 0 and 2 <= idx[1] <= 3 and 5 <= idx[2] <= 5 and 7 <= idx[3] <= 8
        seen.update(idx)
    assert seen == {0, 2, 3, 5, 7, 8}  # 1, 4, 6, 9 (segment ends) never drawn, as in the release


def test_rand_single_frame_segment_falls_back_to_sorted_subset():
    # vlen 5, 4 segments: bounds 0,1,2,3,5 -> segments of one frame -> random sorted subset of size 4
    rng = random.Random(1)
    draws = {tuple(sample_frame_indices(4, 5, "rand", rng)) for _ in range(200)}
    assert all(list(d) == sorted(d) and len(set(d)) == 4 for d in draws)
    assert len(draws) > 1


def test_short_video_padded_with_last_frame():
    assert sample_frame_indices(4, 2, "middle") == [0, 1, 1, 1]
    assert sample_frame_indices(3, 1, "rand", random.Random(0)) == [0, 0, 0]
    assert sample_frame_indices(4, 2, "uniform") == [0, 1, 1, 1]


def test_uniform_and_fps():
    assert sample_frame_indices(3, 11, "uniform") == [0, 5, 10]
    # 4 s at 25 fps, 1 frame per second at the middle of each second: 12.5 -> 12 (numpy rounds half to even)
    assert sample_frame_indices(0, 100, "fps1", fps=25) == [12, 38, 62, 88]
    assert sample_frame_indices(0, 100, "fps1", fps=25, max_num_frames=2) == [12, 38]


def test_bad_modes():
    with pytest.raises(ValueError, match="unknown sampling mode"):
        sample_frame_indices(4, 10, "random")
    with pytest.raises(ValueError, match="needs the video's fps"):
        sample_frame_indices(4, 10, "fps2")
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(4, 0, "middle")


def test_pre_text():
    assert pre_text("A man's dog -- runs/jumps! <person> (fast)") == "a mans dog runs jumps person fast"
    assert pre_text("one two three four", max_words=2) == "one two"


@pytest.fixture(scope="module")
def tokenizer():
    return ReleaseTokenizer()


def test_tokenizer_matches_release_ids(tokenizer, ref_dir):
    ref = json.loads((ref_dir / "tokenizer_reference.json").read_text())
    assert ref["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    for ex in ref["examples"]:
        raw = tokenizer([ex["text"]], 12)
        assert raw["input_ids"][0].tolist() == ex["input_ids_raw_max12"], ex["text"]
        assert raw["attention_mask"][0].tolist() == ex["attention_mask_raw_max12"]
        clean = tokenizer([pre_text(ex["text"])], 32)
        assert clean["input_ids"][0].tolist() == ex["input_ids_pretext_max32"], ex["text"]
        assert pre_text(ex["text"]) == ex["pre_text"]


def test_tokenizer_never_appends_sep(tokenizer):
    out = tokenizer(["a cat", "a dog runs"], 8)
    assert out["input_ids"].dtype == torch.long
    assert (out["input_ids"] != tokenizer.sep_token_id).all()
    assert out["input_ids"][0, 0] == tokenizer.cls_token_id
    assert out["attention_mask"].sum(1).tolist() == [3, 4]


def test_tokenizer_pads_to_longest_on_request(tokenizer):
    full = tokenizer(["a cat", "a dog runs", "one two three four five six seven"], 6)
    short = tokenizer(["a cat", "a dog runs"], 6, pad_to_longest=True)
    assert full["input_ids"].shape == (3, 6)  # the release: always max_length (truncated)
    assert short["input_ids"].shape == (2, 4)  # [CLS] a dog runs
    assert torch.equal(short["input_ids"], full["input_ids"][:2, :4])
    assert torch.equal(short["attention_mask"], full["attention_mask"][:2, :4])
    assert tokenizer(["one two three four five six seven"], 6, pad_to_longest=True)["input_ids"].shape == (1, 6)
