"""The training loop: one process or many (`torchrun`, DDP), mixed image/video corpora, mixed precision,
gradient accumulation and clipping, JSON-lines log, atomic checkpoints with exact resume, SIGTERM/SIGINT
save-and-exit, retrieval evaluation at epoch ends."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from singularity_vl.data.annotations import CorpusSpec, load_caption_corpora, load_qa
from singularity_vl.data.datasets import (
    CaptionCollator,
    CaptionTrainDataset,
    QACollator,
    QATrainDataset,
    mixed_order,
    seed_worker,
)
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.transforms import TrainTransform
from singularity_vl.data.video_reader import set_decoded_clip_cache
from singularity_vl.devices import auto_num_workers, to_device
from singularity_vl.distributed import all_agree, all_reduce_, gather_objects, init_distributed, sum_int
from singularity_vl.models.config import preset
from singularity_vl.models.precision import autocast, model_width, resolve_precision
from singularity_vl.models.singularity import SingularityBase, create_model
from singularity_vl.train import checkpoint as ck
from singularity_vl.train.config import TrainConfig, check_initial_weights, to_yaml
from singularity_vl.train.optim import create_optimizer, create_scheduler, freeze_parameters


class EpochSampler(Sampler[int]):
    """Indices shuffled by (seed, epoch), sharded across ranks, whole batches only, resumable mid-epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        per_rank = len(order) // self.world
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return mine[: len(mine) // self.batch_size * self.batch_size]

    def num_batches(self) -> int:
        return len(self.indices()) // self.batch_size

    def __iter__(self):
        return iter(self.indices()[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        return len(self.indices()) - self.skip_batches * self.batch_size


def _reduce_mean(values: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return values
    t = all_reduce_(torch.tensor(list(values.values()), dtype=torch.float64))
    return {k: v / world for k, v in zip(values, t.tolist(), strict=True)}


def build_model(cfg: TrainConfig) -> SingularityBase:
    check_initial_weights(cfg)
    if cfg.model in ("tiny", "base"):
        config = preset(cfg.model, cfg.task)
        if cfg.image_res:
            config.vision.image_size = cfg.image_res
        config.gradient_checkpointing = cfg.gradient_checkpointing
        if cfg.vision_init or cfg.text_init:
            from singularity_vl.checkpoint.hf_init import init_from_hf

            return init_from_hf(cfg.vision_init, cfg.text_init, config=config)
        return create_model(config)
    from singularity_vl import zoo

    if not Path(cfg.model).exists() and zoo.split_name(cfg.model) is None:
        raise FileNotFoundError(f"model: {cfg.model} is neither a preset (tiny, base), a path nor a release model name")
    from singularity_vl.api import resolve
    from singularity_vl.checkpoint.release import load_any

    path = resolve(cfg.model)  # a release model name is downloaded and converted on first use
    kwargs = {"image_size": cfg.image_res} if cfg.image_res and not path.is_dir() else {}
    return load_any(path, task=cfg.task, **kwargs)


class Trainer:
    """Builds everything from a TrainConfig and runs it; `run()` returns the final summary."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rank, self.world, self.device = init_distributed(cfg.device)
        self.out = Path(cfg.output_dir)
        self.stop_requested = False
        torch.manual_seed(cfg.seed)
        model = build_model(cfg)
        if cfg.temporal_layers and not model.config.temporal.enable_encoder:
            from singularity_vl.models.singularity import add_temporal_modules

            model = add_temporal_modules(
                model,
                max(cfg.num_frames, 1),
                cfg.temporal_layers,
                update_pooler_embed=cfg.update_pooler_embed,
                embed_init_std=cfg.temporal_embed_init_std,
            )
        elif cfg.update_pooler_embed and model.config.temporal.enable_encoder:
            # a model that has its temporal encoder already: which CLS feeds ITC is no architecture change
            model.config.temporal.update_pooler_embed = True
        self.model = model.to(self.device)
        if self.world > 1:  # the same initial weights everywhere, then each rank its own draws (the release)
            torch.manual_seed(cfg.seed + self.rank)
        freeze_parameters(self.model, cfg.optimizer.freeze)
        self.precision = resolve_precision(cfg.precision, self.device, model_width(self.model))
        if cfg.decoded_clip_cache_mb > 0:
            set_decoded_clip_cache(cfg.decoded_clip_cache_mb)
        self.tokenizer = ReleaseTokenizer(cfg.tokenizer)
        self.num_workers = auto_num_workers(self.device, cfg.num_workers)
        res = self.model.config.vision.image_size
        self.loaders: dict[str, DataLoader] = {}
        self.samplers: dict[str, EpochSampler] = {}
        for media_type, ds, collate in self._datasets(res):
            bs = cfg.batch_size.get(media_type, 32)
            sampler = EpochSampler(len(ds), bs, cfg.seed, self.rank, self.world)
            if sampler.num_batches() == 0:
                raise ValueError(f"{media_type} corpus has {len(ds)} samples: fewer than one batch of {bs} per rank")
            self.samplers[media_type] = sampler
            self.loaders[media_type] = DataLoader(
                ds,
                batch_size=bs,
                sampler=sampler,
                collate_fn=collate,
                num_workers=self.num_workers,
                worker_init_fn=seed_worker,
                drop_last=True,
                pin_memory=self.device.type == "cuda",
            )
        steps_per_epoch = math.ceil(self.steps_in_epoch() / cfg.grad_accum)
        self.optimizer = create_optimizer(
            self.model,
            cfg.optimizer.lr,
            cfg.optimizer.weight_decay,
            tuple(cfg.optimizer.opt_betas),
            cfg.optimizer.different_lr_names,
            cfg.optimizer.different_lr,
        )
        self.scheduler = create_scheduler(
            self.optimizer,
            steps_per_epoch,
            cfg.scheduler.epochs,
            cfg.scheduler.warmup_epochs,
            cfg.scheduler.min_lr_multi,
        )
        # loss scaling guards fp16 gradients against underflow on GPUs; CPU autocast runs without it
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" and self.device.type == "cuda" else None
        self.epoch, self.step_in_epoch, self.global_step, self.best = 0, 0, 0, None
        self.best_epoch: int | None = None
        self.epoch_metrics: dict[int, dict[str, Any]] = {}  # finished epoch -> {"val": ..., "test": ...}
        self.skipped_files = 0
        self._group_has_grads = False  # some micro-batch of the current accumulation group went backward
        self._values: dict[str, torch.Tensor] | None = None  # losses of the group's last micro-batch
        self._media = ""
        self._last_saved: tuple[int, int, int] | None = None
        self._resume()
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=True) if self.world > 1 else self.model
        if cfg.compile:
            self.ddp = torch.compile(self.ddp, backend=cfg.compile_backend)
        self.tb = None
        if cfg.tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("tensorboard=true needs the tensorboard package (pip install tensorboard)") from e
            self.tb = SummaryWriter(str(self.out / "tensorboard"))

    def _datasets(self, res: int):
        """(media type, dataset, collate) for each media type present in `train_file`."""
        cfg = self.cfg
        transform = TrainTransform(res, scale=tuple(cfg.crop_scale), flip=cfg.flip)
        for media_type in ("image", "video"):
            specs = [CorpusSpec.parse(s) for s in cfg.train_file]
            specs = [s for s in specs if s.media_type == media_type]
            if not specs:
                continue
            if cfg.task == "qa":
                items = [it for spec in specs for it in load_qa(spec)]
                ds = QATrainDataset(items, transform, cfg.num_frames, cfg.sample_type, cfg.seed)
                collate = QACollator(self.tokenizer, cfg.max_q_len, cfg.max_a_len, pad_to_longest=cfg.pad_to_longest)
                yield media_type, ds, collate
            else:
                samples = load_caption_corpora(specs, multi_video_gt=cfg.multi_video_gt, paragraph=cfg.paragraph)
                ds = CaptionTrainDataset(samples, transform, cfg.num_frames, cfg.sample_type, cfg.seed)
                yield media_type, ds, CaptionCollator(self.tokenizer, cfg.max_txt_l, cfg.pad_to_longest)

    def steps_in_epoch(self) -> int:
        return sum(s.num_batches() for s in self.samplers.values())

    def order(self, epoch: int) -> list[str]:
        """Media type of each step of `epoch` (the release's MetaLoader: shuffled by batch counts); a
        fractional `scheduler.epochs` ends its last epoch part-way, where the schedule ends."""
        steps = mixed_order({n: s.num_batches() for n, s in self.samplers.items()}, self.cfg.seed + epoch)
        epochs = self.cfg.scheduler.epochs
        if epoch == math.ceil(epochs) - 1 and epochs % 1:
            steps = steps[: max(1, math.ceil(len(steps) * (epochs % 1)))]
        return steps

    # --- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": ck.rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best if self.best is not None else float("nan"),
            "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
            "epoch_metrics": json.dumps({str(k): v for k, v in self.epoch_metrics.items()}),
        }

    def save(self) -> None:
        """A checkpoint of this exact point (written once: a second call at the same point does nothing)."""
        point = (self.global_step, self.epoch, self.step_in_epoch)
        if point == self._last_saved:
            return
        rngs = gather_objects([ck.rng_state()]) if self.world > 1 else None  # every rank's generators
        if self.rank == 0:
            state = self._state()
            if rngs is not None:
                state["rng_ranks"] = rngs
            ck.save_checkpoint(
                self.out,
                self.global_step,
                self.model,
                state,
                {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch},
                self.cfg.keep_last,
            )
        self._last_saved = point
        if self.world > 1:
            dist.barrier()

    def _resume(self) -> None:
        if self.rank == 0:
            ck.remove_partial_writes(self.out)
        if not self.cfg.resume:
            return
        found = ck.latest_checkpoint(self.out) if self.cfg.resume == "auto" else None
        if self.cfg.resume != "auto":
            path = Path(self.cfg.resume)
            model, state, _ = ck.load_checkpoint(path)
            found = (path, model, state, {})
        if found is None:
            return
        path, model, state, _ = found
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        rngs = state.get("rng_ranks")
        ck.set_rng_state(rngs[self.rank] if rngs is not None and len(rngs) == self.world else state["rng"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        best = state.get("best", float("nan"))
        self.best = None if best != best else best
        self.best_epoch = None if state.get("best_epoch", -1) < 0 else state["best_epoch"]
        self.epoch_metrics = {int(k): v for k, v in json.loads(state.get("epoch_metrics", "{}")).items()}
        self._last_saved = (self.global_step, self.epoch, self.step_in_epoch)
        if self.rank == 0:
            print(
                f"resumed from {path} (epoch {self.epoch}, step {self.step_in_epoch}, global step {self.global_step})"
            )

    # --- the loop ------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tb is not None and "step" in record:
                for key, value in record.items():
                    if isinstance(value, float):
                        self.tb.add_scalar(f"train/{key}", value, record["step"])

    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = True

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(to_yaml(cfg))
            print(
                f"training in {self.precision} on {self.device} (precision={cfg.precision}),"
                f" {self.world} process(es), {self.num_workers} data worker(s) each"
            )
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        epochs = math.ceil(cfg.scheduler.epochs)
        try:
            if self.epoch > 0 and self.step_in_epoch == 0 and (self.epoch - 1) not in self.epoch_metrics:
                self._evaluate_epoch()  # resumed after an epoch end whose evaluation did not finish
            while self.epoch < epochs:
                if not self._train_epoch():
                    self.save()
                    return {"stopped": True, "global_step": self.global_step}
                self.epoch += 1
                self.step_in_epoch = 0
                self.save()  # the epoch's weights before its evaluation: a crash there loses nothing
                self._evaluate_epoch()
            kept = self._keep_model()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return {"stopped": False, "global_step": self.global_step, "best": self.best, **kept}

    def _train_epoch(self) -> bool:
        """One epoch from `step_in_epoch`; False when stopped early (signal or max_steps). Every rank
        makes the same decisions (step or skip a micro-batch, stop), so all take part in every collective."""
        cfg = self.cfg
        order = self.order(self.epoch)
        n, ga = len(order), cfg.grad_accum
        for name, sampler in self.samplers.items():
            sampler.set_epoch(self.epoch)
            sampler.skip_batches = order[: self.step_in_epoch].count(name)
            self.loaders[name].dataset.set_epoch(self.epoch)
        with torch.random.fork_rng(devices=[]):  # starting loaders must not move the global RNG (exact resume)
            iters = {n: iter(loader) for n, loader in self.loaders.items()}
        self.ddp.train()
        bar = tqdm(total=n, initial=self.step_in_epoch, desc=f"epoch {self.epoch}", disable=self.rank != 0)
        skipped_epoch = 0
        start = time.time()
        for i in range(self.step_in_epoch, n):
            name = order[i]
            batch = next(iters[name])
            skipped_epoch += batch["skipped"]
            # accumulation groups of `grad_accum` micro-batches; the epoch's last group may be shorter and is
            # stepped all the same (no gradient carried into the next epoch)
            group_start = i - i % ga
            group_end = min(n, group_start + ga)
            if all_agree(batch["size"] >= 2):  # a rank with < 2 readable samples: every rank skips it
                self._forward_backward(batch, name, group_end - group_start)
            self.step_in_epoch = i + 1
            bar.update()
            if self.step_in_epoch < group_end:
                continue
            self._optimizer_step()
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 and self.step_in_epoch < n:
                self.save()  # (the epoch's last step is saved by the epoch end)
            stop = not all_agree(not self.stop_requested)
            if stop or (cfg.max_steps and self.global_step >= cfg.max_steps):
                bar.close()
                return False
        bar.close()
        skipped_epoch = sum_int(skipped_epoch)
        self.skipped_files += skipped_epoch
        if self.rank == 0:
            print(f"epoch {self.epoch}: {skipped_epoch} unreadable file(s) skipped; {time.time() - start:.0f}s")
        self._log({"epoch": self.epoch, "skipped_files": skipped_epoch})
        return True

    def _forward_backward(self, batch: dict[str, Any], media: str, group_size: int) -> None:
        """One micro-batch: losses, scaled to the accumulation group, backward."""
        cfg = self.cfg
        batch = to_device(batch, self.device)  # the one place training inputs are moved
        with autocast(self.precision, self.device, cache_enabled=not cfg.gradient_checkpointing):
            if cfg.task == "qa":
                keys = (
                    "question_ids",
                    "question_mask",
                    "answer_ids",
                    "answer_mask",
                    "answers_per_question",
                    "answer_weights",
                )
                values = {"loss": self.ddp(batch["video"], *(batch[k] for k in keys))}
            else:
                out = self.ddp(
                    batch["video"],
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch["video_ids"],
                    loss_weights=cfg.loss_weight,
                    itc_gather=cfg.itc_gather,
                    itm_reversed_negatives=cfg.itm_reversed_negatives,
                )
                values = {"loss": out.loss, "loss_itc": out.loss_itc, "loss_itm": out.loss_itm}
                if out.loss_mlm is not None:
                    values["loss_mlm"] = out.loss_mlm
        loss = values["loss"] / group_size
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        self._group_has_grads, self._values, self._media = True, values, media

    def _optimizer_step(self) -> None:
        """The end of an accumulation group: clip, step, schedule, log. A group whose micro-batches were
        all skipped still advances the schedule, so its length stays the planned one."""
        cfg = self.cfg
        values = self._values
        if self._group_has_grads:
            if cfg.optimizer.max_grad_norm > 0:
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                values["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), cfg.optimizer.max_grad_norm
                )
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        self._group_has_grads, self._values = False, None
        if values is not None and (self.global_step % cfg.log_every == 0 or self.global_step == 1):
            values = _reduce_mean({k: v.item() for k, v in values.items()}, self.world)
            self._log(
                {
                    "step": self.global_step,
                    "epoch": self.epoch,
                    "media": self._media,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    **values,
                }
            )

    # --- evaluation and model selection ---------------------------------------------------------
    def _eval_config(self, files: list[str]):
        from singularity_vl.eval.run import EvalConfig

        c = self.cfg
        return EvalConfig(
            task="qa" if c.task == "qa" else "retrieval",
            multi_video_gt=c.multi_video_gt,
            paragraph=c.paragraph,
            answer_list=c.answer_list,
            qa_metric=c.qa_metric,
            max_q_len=c.max_q_len,
            max_a_len=c.max_a_len,
            test_file=list(files),
            num_frames_test=c.num_frames_test,
            sample_type_test=c.sample_type_test,
            k_test=c.k_test,
            max_txt_l=c.max_txt_l,
            batch_size=c.batch_size_test,
            tokenizer=c.tokenizer,
            num_workers=c.num_workers,
            eval_offload=c.eval_offload,
            eval_store_dtype=c.eval_store_dtype,
        )

    def _evaluate_epoch(self) -> None:
        """Evaluate the epoch just finished on `val_file` and `test_file` (each that is set; every rank
        takes part, rank 0 writes); with `model_selection=val` a better val score becomes `best/`."""
        from singularity_vl.eval.run import evaluate

        cfg, e = self.cfg, self.epoch - 1
        splits = {"val": cfg.val_file, "test": cfg.test_file}
        results = {}
        for split, files in splits.items():
            if files:
                name = f"eval_epoch{e:03d}" + ("_val" if split == "val" else "")
                results[split] = evaluate(self.model, self._eval_config(files), self.out / name)
        if not results:
            return
        self.epoch_metrics[e] = results
        self._log({"epoch": e, **({"eval": results["test"]} if "test" in results else {}), "evals": results})
        if cfg.model_selection == "val":
            value = _selection_value(results["val"], cfg.stop_key)
            if value is not None and (self.best is None or value > self.best):
                self.best, self.best_epoch = value, e
                if self.rank == 0:
                    self.model.save_pretrained(self.out / "best")
                    (self.out / "best" / "metrics.json").write_text(json.dumps(results, indent=2))

    def _keep_model(self) -> dict[str, Any]:
        """After the last epoch: the kept model in `best/` (the last epoch's, or the best on val) and the
        run's `metrics.json` with its val and test results."""
        cfg = self.cfg
        last = math.ceil(cfg.scheduler.epochs) - 1
        kept = self.best_epoch if cfg.model_selection == "val" and self.best_epoch is not None else last
        results = self.epoch_metrics.get(kept, {})
        summary = {"model_selection": cfg.model_selection, "kept_epoch": kept, **results}
        if self.rank == 0:
            if kept == last and cfg.model_selection == "last":
                self.model.save_pretrained(self.out / "best")
            if (self.out / "best").is_dir():
                (self.out / "best" / "metrics.json").write_text(json.dumps(summary, indent=2))
            (self.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        return {"kept_epoch": kept, "metrics": results}


def _selection_value(metrics: dict[str, Any], stop_key: str) -> float | None:
    """The number that selects the kept model: `stop_key` of the re-ranked retrieval metrics, or QA/MC
    accuracy."""
    if "reranked" in metrics:
        return metrics["reranked"].get(stop_key)
    return metrics.get("accuracy")
