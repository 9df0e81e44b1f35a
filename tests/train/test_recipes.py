"""The shipped recipes against the original release's, field by field.

`RELEASE` is a table of facts read from the release (jayleicn/singularity, last commit 10a7f70): each row is
(our config, field, the release's value, where the release sets it). `DEVIATIONS` lists the fields where a
shipped config departs from the release on purpose, with the reason; each of them must be named in
docs/REPRODUCE.md. A changed config value that is in neither table fails here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from singularity_vl.eval.run import load_eval_config
from singularity_vl.train.config import TrainConfig, load_train_config

REPO = Path(__file__).resolve().parents[2]

# Every downstream recipe of the release flips training frames (dataset/__init__.py: RandomHorizontalFlip in
# train_transform, used for pre-training, retrieval and QA alike): flip "on" here.
_FLIP = "dataset/__init__.py (RandomHorizontalFlip in train_transform)"

# fmt: off
RELEASE: list[tuple[str, str, Any, str]] = [
    # --- pre-training, 5M (train_corpus=webvid_cc3m) ----------------------------------------------------------
    ("pretrain_5m", "train_file", [("webvid_train.json", "webvid_2fps_224", "video"),
                                   ("cc3m_train.json", "cc3m_224", "image")], "configs/pretrain.yaml available_corpus.webvid_cc3m"),  # noqa: E501
    ("pretrain_5m", "test_file", ("msrvtt_test1k.json", "msrvtt_2fps_224", "video"), "configs/pretrain.yaml test_file"),
    ("pretrain_5m", "model_selection", "last", "tasks/pretrain.py (ckpt_XX.pth each epoch, no selection)"),
    ("pretrain_5m", "vision_init", "beit-base-patch16-224-pt22k-ft22k", "configs/pretrain.yaml vit_zoo.beit"),
    ("pretrain_5m", "text_init", "bert-base-uncased", "configs/pretrain.yaml text_encoder"),
    ("pretrain_5m", "image_res", 224, "configs/pretrain.yaml image_res"),
    ("pretrain_5m", "num_frames", 1, "configs/pretrain.yaml video_input.num_frames"),
    ("pretrain_5m", "sample_type", "rand", "configs/pretrain.yaml video_input.sample_type"),
    ("pretrain_5m", "num_frames_test", 4, "configs/pretrain.yaml video_input.num_frames_test"),
    ("pretrain_5m", "max_txt_l", 32, "configs/pretrain.yaml max_txt_l"),
    ("pretrain_5m", "batch_size", {"image": 128, "video": 96}, "configs/pretrain.yaml batch_size"),
    ("pretrain_5m", "batch_size_test", 100, "configs/pretrain.yaml batch_size_test"),
    ("pretrain_5m", "k_test", 128, "configs/pretrain.yaml k_test"),
    ("pretrain_5m", "loss_weight", {"itc": 1.0, "itm": 1.0, "mlm": 1.0}, "configs/pretrain.yaml loss_weight"),
    ("pretrain_5m", "flip", "on", _FLIP),
    ("pretrain_5m", "optimizer.lr", 1e-4, "configs/pretrain.yaml optimizer.lr"),
    ("pretrain_5m", "optimizer.weight_decay", 0.02, "configs/pretrain.yaml optimizer.weight_decay"),
    ("pretrain_5m", "optimizer.opt_betas", [0.9, 0.999], "configs/pretrain.yaml optimizer.opt_betas"),
    ("pretrain_5m", "optimizer.max_grad_norm", -1.0, "configs/pretrain.yaml optimizer.max_grad_norm"),
    ("pretrain_5m", "optimizer.different_lr_names", [], "configs/pretrain.yaml optimizer.different_lr.enable False"),
    ("pretrain_5m", "scheduler.epochs", 10, "configs/pretrain.yaml scheduler.epochs"),
    ("pretrain_5m", "scheduler.warmup_epochs", 1, "configs/pretrain.yaml scheduler.warmup_epochs"),
    ("pretrain_5m", "scheduler.min_lr_multi", 0.01, "configs/pretrain.yaml scheduler.min_lr_multi"),
    # --- pre-training, 17M (train_corpus=webvid_14m) ----------------------------------------------------------
    ("pretrain_17m", "train_file", [("webvid_train.json", "webvid_2fps_224", "video"),
                                    ("cc3m_train.json", "cc3m_224", "image"),
                                    ("coco.json", "coco", "image"),
                                    ("vg.json", "vg", "image"),
                                    ("sbu.json", "sbu_224", "image"),
                                    ("cc12m.json", "cc12m_224", "image")], "configs/pretrain.yaml available_corpus.webvid_14m"),  # noqa: E501
    ("pretrain_17m", "model_selection", "last", "tasks/pretrain.py"),
    ("pretrain_17m", "vision_init", "beit-base-patch16-224-pt22k-ft22k", "configs/pretrain.yaml vit_zoo.beit"),
    ("pretrain_17m", "text_init", "bert-base-uncased", "configs/pretrain.yaml text_encoder"),
    ("pretrain_17m", "batch_size", {"image": 128, "video": 96}, "configs/pretrain.yaml batch_size"),
    ("pretrain_17m", "max_txt_l", 32, "configs/pretrain.yaml max_txt_l"),
    ("pretrain_17m", "flip", "on", _FLIP),
    ("pretrain_17m", "optimizer.lr", 1e-4, "configs/pretrain.yaml optimizer.lr"),
    ("pretrain_17m", "scheduler.epochs", 10, "configs/pretrain.yaml scheduler.epochs"),
    ("pretrain_17m", "scheduler.warmup_epochs", 1, "configs/pretrain.yaml scheduler.warmup_epochs"),
    ("pretrain_17m", "scheduler.min_lr_multi", 0.01, "configs/pretrain.yaml scheduler.min_lr_multi"),
    # --- second-stage temporal pre-training (README.md "2nd stage video pre-training on WebVid") ---------------
    ("pretrain_temporal", "train_file", [("webvid_train.json", "webvid_2fps_224", "video")], "README.md: corpus webvid"),  # noqa: E501
    ("pretrain_temporal", "temporal_layers", 2, "README.md: temporal_vision_encoder.num_layers=2"),
    ("pretrain_temporal", "num_frames", 4, "README.md: video_input.num_frames=4"),
    ("pretrain_temporal", "batch_size.video", 32, "README.md: batch_size.video=32"),
    ("pretrain_temporal", "optimizer.lr", 5e-5, "README.md: optimizer.lr=5e-5"),
    ("pretrain_temporal", "optimizer.different_lr_names", [], "configs/pretrain.yaml different_lr.enable False"),
    ("pretrain_temporal", "scheduler.epochs", 5, "README.md: scheduler.epochs=5"),
    ("pretrain_temporal", "scheduler.warmup_epochs", 1, "configs/pretrain.yaml scheduler.warmup_epochs"),
    ("pretrain_temporal", "scheduler.min_lr_multi", 0.01, "configs/pretrain.yaml scheduler.min_lr_multi"),
    ("pretrain_temporal", "loss_weight", {"itc": 1.0, "itm": 1.0, "mlm": 1.0}, "configs/pretrain.yaml loss_weight"),
    ("pretrain_temporal", "flip", "on", _FLIP),
    ("pretrain_temporal", "model_selection", "last", "tasks/pretrain.py"),
    # --- MSRVTT retrieval -------------------------------------------------------------------------------------
    ("ret_msrvtt", "train_file", [("msrvtt_ret_train7k.json", "msrvtt_2fps_224", "video")], "configs/ret_msrvtt.yaml train_file"),  # noqa: E501
    # the release names the 1k-A test msrvtt_ret_test1k.json here and msrvtt_test1k.json in pretrain.yaml
    ("ret_msrvtt", "test_file", ("msrvtt_test1k.json", "msrvtt_2fps_224", "video"), "configs/ret_msrvtt.yaml test_file"),  # noqa: E501
    ("ret_msrvtt", "val_file", None, "configs/ret_msrvtt.yaml test_types (test only)"),
    ("ret_msrvtt", "model_selection", "last", "configs/ret_msrvtt.yaml stop_key: None"),
    ("ret_msrvtt", "max_txt_l", 32, "configs/ret_msrvtt.yaml max_txt_l"),
    ("ret_msrvtt", "batch_size", {"image": 160, "video": 32}, "configs/ret_msrvtt.yaml batch_size"),
    ("ret_msrvtt", "batch_size_test", 32, "configs/ret_msrvtt.yaml batch_size_test.video"),
    ("ret_msrvtt", "optimizer.lr", 1e-5, "configs/ret_msrvtt.yaml optimizer.lr"),
    ("ret_msrvtt", "scheduler.epochs", 5, "configs/ret_msrvtt.yaml scheduler.epochs"),
    ("ret_msrvtt", "scheduler.warmup_epochs", 0, "configs/ret_msrvtt.yaml scheduler.warmup_epochs"),
    ("ret_msrvtt", "scheduler.min_lr_multi", 0.1, "configs/ret_msrvtt.yaml scheduler.min_lr_multi"),
    ("ret_msrvtt", "flip", "on", _FLIP),
    # --- DiDeMo -----------------------------------------------------------------------------------------------
    ("ret_didemo", "train_file", [("didemo_ret_train.json", "didemo_2fps_360_trimed30", "video")], "configs/ret_didemo.yaml train_file"),  # noqa: E501
    ("ret_didemo", "val_file", ("didemo_ret_val.json", "didemo_2fps_360_trimed30", "video"), "configs/ret_didemo.yaml test_file.val"),  # noqa: E501
    ("ret_didemo", "test_file", ("didemo_ret_test.json", "didemo_2fps_360_trimed30", "video"), "configs/ret_didemo.yaml test_file.test"),  # noqa: E501
    ("ret_didemo", "model_selection", "val", "configs/ret_didemo.yaml stop_key: val/"),
    ("ret_didemo", "stop_key", "r_mean", "tasks/retrieval.py (eval_res[stop_key]['r_mean'])"),
    ("ret_didemo", "paragraph", True, "configs/ret_didemo.yaml is_paragraph_retrieval"),
    ("ret_didemo", "max_txt_l", 64, "configs/ret_didemo.yaml max_txt_l"),
    ("ret_didemo", "batch_size", {"image": 160, "video": 32}, "configs/ret_didemo.yaml batch_size"),
    ("ret_didemo", "optimizer.lr", 1e-5, "configs/ret_didemo.yaml optimizer.lr"),
    ("ret_didemo", "scheduler.epochs", 10, "configs/ret_didemo.yaml scheduler.epochs"),
    ("ret_didemo", "scheduler.warmup_epochs", 0, "configs/ret_didemo.yaml scheduler.warmup_epochs"),
    ("ret_didemo", "scheduler.min_lr_multi", 0.1, "configs/ret_didemo.yaml scheduler.min_lr_multi"),
    ("ret_didemo", "flip", "on", _FLIP),
    # --- ActivityNet Captions ---------------------------------------------------------------------------------
    ("ret_anet", "train_file", [("anet_ret_train.json", "activity_net_2fps_360", "video")], "configs/ret_anet.yaml train_file"),  # noqa: E501
    ("ret_anet", "val_file", ("anet_ret_val_1.json", "activity_net_2fps_360", "video"), "configs/ret_anet.yaml test_file.val1, stop_key val1/"),  # noqa: E501
    ("ret_anet", "test_file", ("anet_ret_val_1.json", "activity_net_2fps_360", "video"), "configs/ret_anet.yaml test_file.val1"),  # noqa: E501
    ("ret_anet", "model_selection", "val", "configs/ret_anet.yaml stop_key: val1/"),
    ("ret_anet", "paragraph", True, "configs/ret_anet.yaml is_paragraph_retrieval"),
    ("ret_anet", "max_txt_l", 150, "configs/ret_anet.yaml max_txt_l"),
    ("ret_anet", "batch_size", {"image": 160, "video": 32}, "configs/ret_anet.yaml batch_size"),
    ("ret_anet", "optimizer.lr", 1e-5, "configs/ret_anet.yaml optimizer.lr"),
    ("ret_anet", "scheduler.epochs", 10, "configs/ret_anet.yaml scheduler.epochs"),
    ("ret_anet", "scheduler.warmup_epochs", 0, "configs/ret_anet.yaml scheduler.warmup_epochs"),
    ("ret_anet", "scheduler.min_lr_multi", 0.1, "configs/ret_anet.yaml scheduler.min_lr_multi"),
    ("ret_anet", "flip", "on", _FLIP),
    # --- SSv2 label / template --------------------------------------------------------------------------------
    ("ret_ssv2_label", "train_file", [("ssv2_ret_label_train.json", "ssv2", "video")], "configs/ret_ssv2_label.yaml train_file"),  # noqa: E501
    ("ret_ssv2_label", "test_file", ("ssv2_ret_label_val_small.json", "ssv2", "video"), "configs/ret_ssv2_label.yaml test_file.minival"),  # noqa: E501
    ("ret_ssv2_label", "model_selection", "last", "configs/ret_ssv2_label.yaml stop_key: None"),
    ("ret_ssv2_label", "multi_video_gt", True, "configs/ret_ssv2_label.yaml has_multi_vision_gt"),
    ("ret_ssv2_label", "max_txt_l", 25, "configs/ret_ssv2_label.yaml max_txt_l"),
    ("ret_ssv2_label", "batch_size", {"image": 160, "video": 32}, "configs/ret_ssv2_label.yaml batch_size"),
    ("ret_ssv2_label", "optimizer.lr", 1e-5, "configs/ret_ssv2_label.yaml optimizer.lr"),
    ("ret_ssv2_label", "scheduler.epochs", 10, "configs/ret_ssv2_label.yaml scheduler.epochs"),
    ("ret_ssv2_label", "scheduler.warmup_epochs", 0, "configs/ret_ssv2_label.yaml scheduler.warmup_epochs"),
    ("ret_ssv2_label", "scheduler.min_lr_multi", 0.1, "configs/ret_ssv2_label.yaml scheduler.min_lr_multi"),
    ("ret_ssv2_template", "train_file", [("ssv2_ret_template_train.json", "ssv2", "video")], "configs/ret_ssv2_template.yaml train_file"),  # noqa: E501
    ("ret_ssv2_template", "test_file", ("ssv2_ret_template_val_small.json", "ssv2", "video"), "configs/ret_ssv2_template.yaml test_file.minival"),  # noqa: E501
    ("ret_ssv2_template", "model_selection", "last", "configs/ret_ssv2_template.yaml stop_key: None"),
    ("ret_ssv2_template", "multi_video_gt", True, "configs/ret_ssv2_template.yaml has_multi_vision_gt"),
    ("ret_ssv2_template", "max_txt_l", 22, "configs/ret_ssv2_template.yaml max_txt_l"),
    ("ret_ssv2_template", "batch_size", {"image": 160, "video": 32}, "configs/ret_ssv2_template.yaml batch_size"),
    ("ret_ssv2_template", "optimizer.lr", 1e-4, "configs/ret_ssv2_template.yaml optimizer.lr"),
    ("ret_ssv2_template", "scheduler.epochs", 10, "configs/ret_ssv2_template.yaml scheduler.epochs"),
    ("ret_ssv2_template", "scheduler.warmup_epochs", 0, "configs/ret_ssv2_template.yaml scheduler.warmup_epochs"),
    ("ret_ssv2_template", "scheduler.min_lr_multi", 0.1, "configs/ret_ssv2_template.yaml scheduler.min_lr_multi"),
    # --- COCO / Flickr30K -------------------------------------------------------------------------------------
    ("ret_coco", "train_file", [("coco_train.json", "coco", "image")], "configs/ret_coco.yaml train_file"),
    ("ret_coco", "val_file", ("coco_val.json", "coco", "image"), "configs/ret_coco.yaml test_file.val"),
    ("ret_coco", "test_file", ("coco_test.json", "coco", "image"), "configs/ret_coco.yaml test_file.test"),
    ("ret_coco", "model_selection", "val", "configs/ret_coco.yaml stop_key: val/"),
    ("ret_coco", "num_frames_test", 1, "configs/ret_coco.yaml video_input.num_frames_test"),
    ("ret_coco", "max_txt_l", 22, "configs/ret_coco.yaml max_txt_l"),
    ("ret_coco", "batch_size", {"image": 160, "video": 128}, "configs/ret_coco.yaml batch_size"),
    ("ret_coco", "batch_size_test", 128, "configs/ret_coco.yaml batch_size_test.image"),
    ("ret_coco", "optimizer.lr", 1e-5, "configs/ret_coco.yaml optimizer.lr"),
    ("ret_coco", "scheduler.epochs", 10, "configs/ret_coco.yaml scheduler.epochs"),
    ("ret_coco", "scheduler.warmup_epochs", 0, "configs/ret_coco.yaml scheduler.warmup_epochs"),
    ("ret_coco", "scheduler.min_lr_multi", 0.1, "configs/ret_coco.yaml scheduler.min_lr_multi"),
    ("ret_coco", "flip", "on", _FLIP),
    ("ret_flickr", "train_file", [("flickr30k_train.json", "f30k", "image")], "configs/ret_flickr.yaml train_file"),
    ("ret_flickr", "val_file", ("flickr30k_val.json", "f30k", "image"), "configs/ret_flickr.yaml test_file.val"),
    ("ret_flickr", "test_file", ("flickr30k_test.json", "f30k", "image"), "configs/ret_flickr.yaml test_file.test"),
    ("ret_flickr", "model_selection", "val", "configs/ret_flickr.yaml stop_key: val/"),
    ("ret_flickr", "num_frames_test", 1, "configs/ret_flickr.yaml video_input.num_frames_test"),
    ("ret_flickr", "max_txt_l", 32, "configs/ret_flickr.yaml max_txt_l"),
    ("ret_flickr", "batch_size", {"image": 160, "video": 128}, "configs/ret_flickr.yaml batch_size"),
    ("ret_flickr", "batch_size_test", 128, "configs/ret_flickr.yaml batch_size_test.image"),
    ("ret_flickr", "optimizer.lr", 1e-5, "configs/ret_flickr.yaml optimizer.lr"),
    ("ret_flickr", "scheduler.epochs", 10, "configs/ret_flickr.yaml scheduler.epochs"),
    ("ret_flickr", "scheduler.warmup_epochs", 0, "configs/ret_flickr.yaml scheduler.warmup_epochs"),
    ("ret_flickr", "scheduler.min_lr_multi", 0.1, "configs/ret_flickr.yaml scheduler.min_lr_multi"),
    ("ret_flickr", "flip", "on", _FLIP),
    # --- QA ---------------------------------------------------------------------------------------------------
    ("qa_msrvtt", "train_file", [("msrvtt_qa_train.json", "msrvtt_2fps_224", "video")], "configs/qa_msrvtt.yaml train_file"),  # noqa: E501
    ("qa_msrvtt", "val_file", ("msrvtt_qa_val.json", "msrvtt_2fps_224", "video"), "configs/qa_msrvtt.yaml test_file.val"),  # noqa: E501
    ("qa_msrvtt", "test_file", ("msrvtt_qa_test.json", "msrvtt_2fps_224", "video"), "configs/qa_msrvtt.yaml test_file.test"),  # noqa: E501
    ("qa_msrvtt", "model_selection", "val", "configs/qa_msrvtt.yaml stop_key: val"),
    ("qa_msrvtt", "qa_metric", "exact", "tasks/vqa_utils.py eval_simple_qa_acc"),
    ("qa_msrvtt", "max_q_len", 25, "configs/qa_msrvtt.yaml max_q_len"),
    ("qa_msrvtt", "max_a_len", 5, "configs/qa_msrvtt.yaml max_a_len"),
    ("qa_msrvtt", "batch_size", {"image": 128, "video": 32}, "configs/qa_msrvtt.yaml batch_size"),
    ("qa_msrvtt", "batch_size_test", 64, "configs/qa_msrvtt.yaml batch_size_test"),
    ("qa_msrvtt", "k_test", 128, "configs/qa_msrvtt.yaml k_test"),
    ("qa_msrvtt", "optimizer.lr", 1e-5, "configs/qa_msrvtt.yaml optimizer.lr"),
    ("qa_msrvtt", "scheduler.epochs", 10, "configs/qa_msrvtt.yaml scheduler.epochs"),
    ("qa_msrvtt", "scheduler.warmup_epochs", 0.5, "configs/qa_msrvtt.yaml scheduler.warmup_epochs"),
    ("qa_msrvtt", "scheduler.min_lr_multi", 0.1, "configs/qa_msrvtt.yaml scheduler.min_lr_multi"),
    ("qa_msrvtt", "flip", "on", _FLIP),
    ("qa_anet", "train_file", [("anet_qa_train.json", "activity_net_2fps_360", "video")], "configs/qa_anet.yaml train_file"),  # noqa: E501
    ("qa_anet", "val_file", ("anet_qa_val.json", "activity_net_2fps_360", "video"), "configs/qa_anet.yaml test_file.val"),  # noqa: E501
    ("qa_anet", "test_file", ("anet_qa_test.json", "activity_net_2fps_360", "video"), "configs/qa_anet.yaml test_file.test"),  # noqa: E501
    ("qa_anet", "model_selection", "val", "configs/qa_anet.yaml stop_key: val"),
    ("qa_anet", "qa_metric", "exact", "tasks/vqa_utils.py eval_simple_qa_acc"),
    ("qa_anet", "max_q_len", 25, "configs/qa_anet.yaml max_q_len"),
    ("qa_anet", "max_a_len", 5, "configs/qa_anet.yaml max_a_len"),
    ("qa_anet", "batch_size", {"image": 128, "video": 32}, "configs/qa_anet.yaml batch_size"),
    ("qa_anet", "optimizer.lr", 1e-5, "configs/qa_anet.yaml optimizer.lr"),
    ("qa_anet", "scheduler.epochs", 10, "configs/qa_anet.yaml scheduler.epochs"),
    ("qa_anet", "scheduler.warmup_epochs", 0.5, "configs/qa_anet.yaml scheduler.warmup_epochs"),
    ("qa_anet", "scheduler.min_lr_multi", 0.1, "configs/qa_anet.yaml scheduler.min_lr_multi"),
    ("qa_anet", "flip", "on", _FLIP),
    ("qa_vqa", "train_file", [("vqa_train.json", "coco", "image"),
                              ("vqa_valminusminival.json", "coco", "image"),
                              ("vg_qa.json", "vg", "image")], "configs/qa_vqa.yaml train_file"),
    ("qa_vqa", "val_file", ("vqa_minival.json", "coco", "image"), "configs/qa_vqa.yaml test_file.minival, stop_key"),
    ("qa_vqa", "test_file", ("vqa_minival.json", "coco", "image"), "tasks/vqa.py eval_after_training: [minival]"),
    ("qa_vqa", "model_selection", "val", "configs/qa_vqa.yaml stop_key: minival"),
    ("qa_vqa", "qa_metric", "vqa", "tasks/vqa_utils.py VQAEval"),
    ("qa_vqa", "num_frames_test", 1, "configs/qa_vqa.yaml video_input.num_frames_test"),
    ("qa_vqa", "max_q_len", 25, "configs/qa_vqa.yaml max_q_len"),
    ("qa_vqa", "max_a_len", 6, "configs/qa_vqa.yaml max_a_len"),
    ("qa_vqa", "batch_size", {"image": 128, "video": 128}, "configs/qa_vqa.yaml batch_size"),
    ("qa_vqa", "optimizer.lr", 1e-5, "configs/qa_vqa.yaml optimizer.lr"),
    ("qa_vqa", "scheduler.epochs", 5, "configs/qa_vqa.yaml scheduler.epochs"),
    ("qa_vqa", "scheduler.warmup_epochs", 0.5, "configs/qa_vqa.yaml scheduler.warmup_epochs"),
    ("qa_vqa", "scheduler.min_lr_multi", 0.1, "configs/qa_vqa.yaml scheduler.min_lr_multi"),
    ("qa_vqa", "flip", "on", _FLIP),
    # --- MSRVTT multiple choice (evaluation only) -------------------------------------------------------------
    ("eval_msrvtt_mc", "test_file", ("msrvtt_mc_test.json", "msrvtt_2fps_224", "video"), "configs/ret_msrvtt_mc.yaml test_file.mc_test"),  # noqa: E501
    ("eval_msrvtt_mc", "num_frames_test", 12, "configs/ret_msrvtt_mc.yaml video_input.num_frames_test"),
    ("eval_msrvtt_mc", "max_txt_l", 32, "configs/ret_msrvtt_mc.yaml max_txt_l"),
]
# fmt: on

# Settings every recipe of the release shares (its configs/*.yaml, dataset/__init__.py, utils/optimizer.py).
_TRAINING = [
    "pretrain_5m", "pretrain_17m", "pretrain_temporal", "ret_msrvtt", "ret_didemo", "ret_anet", "ret_ssv2_label",
    "ret_ssv2_template", "ret_coco", "ret_flickr", "qa_msrvtt", "qa_anet", "qa_vqa",
]  # fmt: skip
_SHARED: list[tuple[str, Any, str]] = [
    ("image_res", 224, "configs/*.yaml image_res"),
    ("sample_type", "rand", "configs/*.yaml video_input.sample_type"),
    ("sample_type_test", "middle", "configs/*.yaml video_input.sample_type_test"),
    ("k_test", 128, "configs/*.yaml k_test"),
    ("crop_scale", [0.5, 1.0], "dataset/__init__.py RandomResizedCrop(scale=(0.5, 1.0))"),
    ("optimizer.weight_decay", 0.02, "configs/*.yaml optimizer.weight_decay"),
    ("optimizer.opt_betas", [0.9, 0.999], "configs/*.yaml optimizer.opt_betas"),
    ("optimizer.max_grad_norm", -1.0, "configs/*.yaml optimizer.max_grad_norm"),
    ("optimizer.different_lr_names", [], "configs/*.yaml optimizer.different_lr.enable False"),
]
RELEASE += [(name, field, value, where) for name in _TRAINING for field, value, where in _SHARED]
RELEASE += [
    (name, "num_frames", 1, f"configs/{name}.yaml video_input.num_frames")
    for name in _TRAINING
    if name != "pretrain_temporal"
]
RELEASE += [
    (name, "loss_weight", {"itc": 1.0, "itm": 1.0, "mlm": 0.0}, f"configs/{name}.yaml loss_weight (no mlm)")
    for name in _TRAINING
    if name.startswith("ret_")
]
_ROWS: dict[tuple[str, str], tuple[str, str, Any, str]] = {}
for _row in RELEASE:  # one row per (config, field); a fact stated twice must agree
    assert _ROWS.setdefault(_row[:2], _row)[2] == _row[2], f"conflicting release values for {_row[:2]}"
RELEASE = list(_ROWS.values())

# Fields where a shipped config departs from the release on purpose: (config, field) -> (our value, why).
_FRAMES = "the paper's inference frames (Sec. 4 / README evaluation command); the release YAML says 4"
_SWAP = "flip with left/right swapped in the caption: the release's flip without a swap mislabels the direction"
DEVIATIONS: dict[tuple[str, str], tuple[Any, str]] = {
    ("ret_msrvtt", "num_frames_test"): (12, _FRAMES),
    ("ret_didemo", "num_frames_test"): (12, _FRAMES),
    ("ret_anet", "num_frames_test"): (32, _FRAMES),
    ("ret_ssv2_label", "num_frames_test"): (12, _FRAMES),
    ("ret_ssv2_template", "num_frames_test"): (12, _FRAMES),
    ("qa_msrvtt", "num_frames_test"): (12, _FRAMES),
    ("qa_anet", "num_frames_test"): (32, _FRAMES),
    ("ret_ssv2_label", "flip"): ("swap", _SWAP),
    ("ret_ssv2_template", "flip"): ("swap", _SWAP),
}


def _env(monkeypatch) -> None:
    monkeypatch.setenv("SL_DATA_DIR", "/data")
    monkeypatch.setenv("SL_PRETRAINED", "/ckpt/pt")
    monkeypatch.setenv("SL_HF_DIR", "/hf")


def _spec(spec: Any) -> tuple[str, str, str] | None:
    """[annotation, media root, type] -> (annotation file name, media folder name, type)."""
    if spec is None:
        return None
    return (os.path.basename(spec[0]), os.path.basename(spec[1]), spec[2] if len(spec) > 2 else "image")


def shipped_value(cfg: Any, field: str) -> Any:
    """The value of a dotted `field` of a loaded config, with dataset specs reduced to file/folder names."""
    if field == "train_file":
        return [_spec(s) for s in cfg.train_file]
    if field in ("val_file", "test_file"):
        return _spec(getattr(cfg, field))
    if field in ("vision_init", "text_init"):
        return os.path.basename(getattr(cfg, field))
    value = cfg
    for part in field.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _load(name: str):
    return load_eval_config(name) if name.startswith("eval_") else load_train_config(name)


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    """Every shipped config, loaded once."""
    from singularity_vl.configs import shipped_configs

    with pytest.MonkeyPatch.context() as mp:
        _env(mp)
        return {name: _load(name) for name in shipped_configs()}


@pytest.mark.parametrize("row", RELEASE, ids=lambda r: f"{r[0]}:{r[1]}")
def test_shipped_config_matches_the_release(row, shipped):
    name, field, release_value, where = row
    assert (name, field) not in DEVIATIONS, f"{name}.{field} is both a release fact and a deviation"
    got = shipped_value(shipped[name], field)
    assert got == release_value, f"{name}.{field} = {got!r}; the release has {release_value!r} ({where})"


@pytest.mark.parametrize("key", sorted(DEVIATIONS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_deliberate_deviations_are_shipped_and_documented(key, shipped):
    name, field = key
    value, _why = DEVIATIONS[key]
    assert shipped_value(shipped[name], field) == value
    doc = (REPO / "docs" / "REPRODUCE.md").read_text(encoding="utf-8")
    assert f"`{name}`" in doc and f"`{field}`" in doc, f"docs/REPRODUCE.md does not name {name} / {field}"


def test_every_training_recipe_has_a_model_selection_row():
    """Which epoch is kept decides the reported number: each training recipe states it against the release."""
    from singularity_vl.configs import shipped_configs

    recipes = {n for n in shipped_configs() if not n.startswith("eval_")}
    covered = {name for name, field, _, _ in RELEASE if field == "model_selection"}
    assert recipes == covered


def test_val_selection_recipes_have_a_val_file(monkeypatch):
    _env(monkeypatch)
    for name, field, value, _ in RELEASE:
        if field == "model_selection" and value == "val":
            cfg: TrainConfig = load_train_config(name)
            assert cfg.val_file, f"{name}: model_selection=val needs val_file"


def test_headers_do_not_claim_release_defaults_for_deviations():
    """A config whose header says it is the release's recipe names each of its deviations."""
    configs = REPO / "src" / "singularity_vl" / "configs"
    for (name, field), _ in DEVIATIONS.items():
        header = "".join(
            line for line in (configs / f"{name}.yaml").read_text().splitlines(True) if line.startswith("#")
        )
        assert "Deviation" in header, f"{name}.yaml: header does not name its deviation in {field}"


def test_recipes_evaluate_with_their_test_settings(monkeypatch):
    """`evaluate --config <recipe>` takes the recipe's test set and test-time settings."""
    from singularity_vl.configs import shipped_configs

    _env(monkeypatch)
    for name in (n for n in shipped_configs() if not n.startswith("eval_")):
        train, ev = load_train_config(name), load_eval_config(name)
        assert ev.task == ("retrieval" if train.task == "pretrain" else train.task), name
        assert ev.test_file == train.test_file and ev.num_frames_test == train.num_frames_test, name
        assert ev.k_test == train.k_test and ev.batch_size == train.batch_size_test, name
        assert (ev.multi_video_gt, ev.paragraph, ev.qa_metric) == (
            train.multi_video_gt,
            train.paragraph,
            train.qa_metric,
        )
        assert (ev.max_txt_l, ev.max_q_len, ev.max_a_len) == (train.max_txt_l, train.max_q_len, train.max_a_len)
