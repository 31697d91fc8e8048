"""Train an image-text retrieval model with triplet loss + beta * VSL: ``vsl-train``.

    vsl-train --data DATA --dataset f30k --model sgr            # triplet + 10 * VSL (the paper)
    vsl-train --data DATA --dataset f30k --model sgr --no-vsl   # triplet-only baseline
    vsl-train --output runs/x --resume                          # continue an interrupted run
    vsl-train --demo                                            # synthetic demo, baseline vs VSL, CPU

Output folder: ``checkpoint.pth`` (latest state, written atomically at every epoch end and every
``--checkpoint-every`` steps), ``model_best.pth`` (best validation rsum), ``metrics.jsonl`` (one line
per epoch), ``config.json``, ``vocab.json``, ``results.json`` and TensorBoard logs if tensorboard is
installed. A run killed at any point continues with ``--resume`` from its last checkpoint and ends
in exactly the state an uninterrupted run reaches (batch order, dropout and data RNG are part of
the checkpoint).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ._atomic import atomic_open, atomic_write
from .criterion import VSLCriterion
from .data import PrecompSplit, Vocabulary, epoch_batches, resolve_data_dir
from .data.precomp import split_paths
from .evaluate import CHECKPOINT_FORMAT, default_protocols, evaluate_model, pick_device
from .metrics import format_metrics
from .models import MODELS, build_model

CHECKPOINT_VERSION = 1
# options that may differ between the interrupted run and the --resume call
RESUME_MUTABLE = ("device", "progress", "tensorboard", "epochs", "output", "resume", "threads", "checkpoint_every",
                  "overwrite", "global_batch")


@dataclass
class TrainConfig:
    data: Optional[str] = None
    dataset: Optional[str] = None
    output: str = "runs/vsl"
    model: str = "vse"
    # loss
    vsl: bool = True
    alpha: float = 1.0
    beta: float = 10.0
    margin: float = 0.2
    max_violation: bool = True
    tau: float = 1e-3
    text_side: bool = False
    variant: str = "row"
    semantic: str = "tfidf"
    # model
    embed_size: int = 1024
    word_dim: int = 300
    num_layers: int = 1
    sim_dim: int = 256
    sgr_step: int = 3
    pooling: str = "mean"
    dropout: float = 0.4
    # data
    captions_per_image: int = 5
    vocab: Optional[str] = None
    vocab_min_count: int = 1
    train_split: str = "train"
    val_split: str = "dev"
    test_split: Optional[str] = "auto"
    val_images: int = 0
    # optimisation
    batch_size: int = 128
    epochs: int = 20
    lr: float = 3e-4
    lr_update: int = 10
    lr_decay: float = 0.1
    grad_clip: float = 2.0
    seed: int = 0
    # runtime
    device: str = "auto"
    threads: int = 0
    progress: bool = True
    tensorboard: bool = True
    checkpoint_every: int = 0
    global_batch: bool = False
    resume: bool = False
    overwrite: bool = False


class CheckpointMismatch(ValueError):
    pass


# ----------------------------------------------------------------------------- helpers

def atomic_save(obj, path: str) -> None:
    """torch.save via a temporary file and os.replace: a kill leaves the old or the new file."""
    with atomic_open(path) as f:
        torch.save(obj, f)


atomic_write_text = atomic_write


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The paper's schedule: ``lr`` for ``lr_update`` epochs, then multiplied by ``lr_decay`` (0.1) every
    ``lr_update`` epochs."""
    if cfg.lr_update <= 0:
        return cfg.lr
    return cfg.lr * (cfg.lr_decay ** (epoch // cfg.lr_update))


def caption_index_class():
    """``vsl_ext.CaptionIndex`` (imported lazily; tests may substitute a stand-in)."""
    try:
        from .captions import CaptionIndex
    except ImportError as exc:
        raise ImportError("vsl_ext.CaptionIndex (vsl_ext/captions.py) is needed for the VSL term's semantic "
                          f"similarities but could not be imported: {exc}") from exc
    return CaptionIndex


def _tensorboard_writer(cfg: TrainConfig, purge_step: int):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:   # tensorboard is optional
        return None
    return SummaryWriter(log_dir=os.path.join(cfg.output, "tensorboard"), purge_step=purge_step or None)


def validate_config(cfg: TrainConfig) -> None:
    if cfg.model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {cfg.model!r}")
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (triplet and VSL compare pairs in a batch), got {cfg.batch_size}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {cfg.epochs}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"--lr must be > 0, got {cfg.lr}")
    if not cfg.tau > 0:
        raise ValueError(f"--tau must be > 0, got {cfg.tau}")
    if cfg.beta < 0 or cfg.alpha < 0:
        raise ValueError("--alpha and --beta must be >= 0")
    if cfg.variant not in ("row", "public-code"):
        raise ValueError(f"--variant must be row or public-code, got {cfg.variant!r}")
    if cfg.semantic not in ("tfidf", "cider-d"):
        raise ValueError(f"--semantic must be tfidf or cider-d, got {cfg.semantic!r}")
    if cfg.captions_per_image < 1:
        raise ValueError(f"--captions-per-image must be >= 1, got {cfg.captions_per_image}")
    if cfg.global_batch and (cfg.model != "vse" or cfg.variant != "row" or cfg.text_side):
        raise ValueError("--global-batch needs --model vse (separate image and caption embeddings), --variant row "
                         "and no --text-side: those are the parts of the loss that shard by rows")


class _Progress:
    """tqdm when available and wanted, silent otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, postfix: Dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Holds everything of one run; :meth:`run` trains, validates, checkpoints and tests."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print,
                 index_factory: Optional[Callable] = None):
        self.log = log
        ckpt = None
        ckpt_path = os.path.join(cfg.output, "checkpoint.pth")
        if cfg.resume and not os.path.isfile(ckpt_path):
            if cfg.data is None or cfg.epochs <= 0:
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
            log(f"--resume: no checkpoint at {ckpt_path} yet, starting the run from the beginning")
            cfg = dataclasses.replace(cfg, resume=False)
        if not cfg.resume and os.path.isfile(ckpt_path) and not cfg.overwrite:
            raise FileExistsError(f"{ckpt_path} exists: continue that run with --resume, or start over with "
                                  f"--overwrite, or pick another --output")
        if cfg.resume:
            try:
                ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            except Exception as exc:   # truncated/corrupt: zipfile/pickle errors of many kinds
                raise ValueError(f"{ckpt_path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
            if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{ckpt_path} is not a vsl-train checkpoint")
            stored = TrainConfig(**ckpt["config"])
            runtime = {k: getattr(cfg, k) for k in RESUME_MUTABLE}
            if runtime["epochs"] <= 0:          # not given on the command line: keep the run's own
                runtime["epochs"] = stored.epochs
            if cfg.data is not None:             # the data folder may have moved
                runtime["data"] = cfg.data
            cfg = dataclasses.replace(stored, **runtime)
            if cfg.data is None:
                raise ValueError("the checkpoint does not name its data folder")
        validate_config(cfg)
        self.cfg = cfg
        if cfg.data is None:
            raise ValueError("--data DIR is required (or --demo)")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        self.ctx = None  # vsl_ext.global_batch.GlobalBatch under torchrun --global-batch
        if cfg.global_batch:
            from .global_batch import GlobalBatch

            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
                torch.cuda.set_device(self.device)
            self.ctx = GlobalBatch.start(self.device)
        self.is_main = self.ctx is None or self.ctx.is_main
        if not self.is_main:
            self.log = lambda *_: None
        self.data_dir = resolve_data_dir(cfg.data, cfg.dataset)
        cpi = cfg.captions_per_image

        # vocabulary: checkpoint > --vocab file > built from the training captions
        train_caps = split_paths(self.data_dir, cfg.train_split)[1]
        if ckpt is not None:
            self.vocab = Vocabulary.from_words(ckpt["vocab"])
        elif cfg.vocab:
            self.vocab = Vocabulary.load(cfg.vocab)
        else:
            if not os.path.isfile(train_caps):
                PrecompSplit(self.data_dir, cfg.train_split, None, cpi)   # raises the descriptive error
            from .data import read_captions
            self.vocab = Vocabulary.build(read_captions(train_caps), cfg.vocab_min_count)
        self.train_data = PrecompSplit(self.data_dir, cfg.train_split, self.vocab, cpi)
        self.val_data = PrecompSplit(self.data_dir, cfg.val_split, self.vocab, cpi)
        for other in (self.val_data,):
            if other.img_dim != self.train_data.img_dim or other.num_regions != self.train_data.num_regions:
                raise ValueError(f"{other.ims_path} has features of shape (regions, dim) = "
                                 f"({other.num_regions}, {other.img_dim}) but {self.train_data.ims_path} has "
                                 f"({self.train_data.num_regions}, {self.train_data.img_dim})")
        self.data_signature = {"train_images": self.train_data.num_images,
                               "train_captions": self.train_data.num_captions,
                               "img_dim": self.train_data.img_dim, "regions": self.train_data.num_regions}
        if ckpt is not None and ckpt["data"] != self.data_signature:
            raise CheckpointMismatch(f"the checkpoint was trained on {ckpt['data']} but {self.data_dir} holds "
                                     f"{self.data_signature}")

        # model, loss, optimiser (seeded before construction so the init is reproducible)
        seed_everything(cfg.seed)
        model_cfg = dict(img_dim=self.train_data.img_dim, vocab_size=len(self.vocab), embed_size=cfg.embed_size,
                         word_dim=cfg.word_dim, num_layers=cfg.num_layers, dropout=cfg.dropout)
        if cfg.model == "vse":
            model_cfg["pooling"] = cfg.pooling
        else:
            model_cfg.update(sim_dim=cfg.sim_dim, sgr_step=cfg.sgr_step, num_regions=self.train_data.num_regions)
        self.model = build_model(cfg.model, **model_cfg).to(self.device)
        beta = cfg.beta if cfg.vsl else 0.0
        self.criterion = VSLCriterion(cfg.margin, cfg.max_violation, cfg.alpha, beta, cfg.tau,
                                      cfg.text_side, cfg.variant)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.index = None
        if beta > 0:
            factory = index_factory or caption_index_class().from_captions
            self.index = factory(self.train_data.caption_groups(), mode=cfg.semantic)

        # progress state
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.best = {"rsum": -1.0, "epoch": -1}
        self.history: List[dict] = []
        self.running = {"loss": 0.0, "triplet": 0.0, "vsl": 0.0, "vsl_text": 0.0, "n": 0, "time": 0.0}
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"]["state_dict"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.epoch, self.step, self.global_step = ckpt["epoch"], ckpt["step"], ckpt["global_step"]
            self.best, self.history, self.running = ckpt["best"], ckpt["history"], ckpt["running"]
            set_rng_state(ckpt["rng"])
        self.ckpt_path = ckpt_path
        self.best_path = os.path.join(cfg.output, "model_best.pth")
        self.metrics_path = os.path.join(cfg.output, "metrics.jsonl")
        self.resumed = ckpt is not None
        if self.is_main:
            self._prepare_output(ckpt is None)
        if self.ctx is not None:
            self.ctx.barrier()

    def _prepare_output(self, new_run: bool) -> None:
        cfg = self.cfg
        os.makedirs(cfg.output, exist_ok=True)
        if new_run:             # a new run: nothing of an overwritten run may survive
            for stale in ("checkpoint.pth", "model_best.pth", "results.json"):
                if os.path.isfile(os.path.join(cfg.output, stale)):
                    os.unlink(os.path.join(cfg.output, stale))
        atomic_write_text(os.path.join(cfg.output, "config.json"), json.dumps(asdict(cfg), indent=1))
        self.vocab.save(os.path.join(cfg.output, "vocab.json"))
        # metrics.jsonl always mirrors the checkpoint's history (lines written after it are dropped)
        atomic_write_text(self.metrics_path, "".join(json.dumps(h) + "\n" for h in self.history))

    # -- checkpoints
    def model_spec(self) -> dict:
        return {"name": self.cfg.model, "config": self.model.config, "state_dict": self.model.state_dict()}

    def checkpoint(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": asdict(self.cfg),
                "model": self.model_spec(), "vocab": list(self.vocab.idx2word),
                "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
                "global_step": self.global_step, "rng": rng_state(), "best": dict(self.best),
                "history": list(self.history), "running": dict(self.running), "data": self.data_signature}

    def save(self) -> None:
        atomic_save(self.checkpoint(), self.ckpt_path)

    # -- one optimisation step
    def train_step(self, caption_ids: np.ndarray) -> Dict[str, float]:
        if self.ctx is not None:
            return self._global_batch_step(caption_ids)
        batch = self.train_data.batch(caption_ids)
        dev = self.device
        sims = self.model(batch["images"].to(dev), batch["tokens"].to(dev), batch["lengths"].to(dev))
        image_sem = caption_sem = None
        if self.index is not None:
            image_sem = self.index.image_similarity(batch["image_ids"], device=dev)
            if self.cfg.text_side:
                caption_sem = self.index.caption_similarity(batch["caption_ids"], device=dev)
        out = self.criterion(sims, image_sem, caption_sem)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in out.items()}

    def _global_batch_step(self, caption_ids: np.ndarray) -> Dict[str, float]:
        from .global_batch import global_batch_losses

        cfg = self.cfg
        local_ids, offset = self.ctx.shard(caption_ids)
        image_sem = None
        if self.index is not None:  # all ranks: the global (B, B) C, cheap from the sparse index
            image_ids = self.train_data.image_of_caption(np.asarray(caption_ids, dtype=np.int64))
            image_sem = self.index.image_similarity(image_ids, device=self.device)
        out = global_batch_losses(self.model, self.train_data.batch(local_ids), offset, image_sem, cfg.margin,
                                  cfg.max_violation, cfg.alpha, cfg.beta if self.index is not None else 0.0,
                                  cfg.tau, self.device, self.ctx)
        self.optimizer.zero_grad(set_to_none=True)
        out.pop("objective").backward()
        self.ctx.average_gradients(list(self.model.parameters()))
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in out.items()}

    def validate(self) -> Dict[str, float]:
        n = self.cfg.val_images or (1000 if (self.cfg.dataset or "").lower().startswith("coco") else None)
        return evaluate_model(self.model, self.val_data, self.device, ("full",), max_images=n)["full"]

    def run(self, crash_after_steps: Optional[int] = None) -> dict:
        """Train the remaining epochs; ``crash_after_steps`` (tests) raises after that many steps of
        this call without saving, like a kill."""
        cfg = self.cfg
        writer = _tensorboard_writer(cfg, self.global_step) if self.is_main else None
        if self.resumed:
            self.log(f"resuming {cfg.output} at epoch {self.epoch + 1}, step {self.step} "
                     f"(global step {self.global_step})")
        self.log(f"{cfg.model} on {self.train_data} | val {self.val_data} | vocab {len(self.vocab)} | "
                 f"{'triplet + %g * VSL' % cfg.beta if self.index is not None else 'triplet only (baseline)'} | "
                 f"device {self.device}")
        steps_this_call = 0
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            lr = lr_at(cfg, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batches = epoch_batches(self.train_data.num_images, cfg.captions_per_image, cfg.batch_size,
                                    cfg.seed, epoch)
            self.model.train()
            bar = _Progress(len(batches), self.step, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and self.is_main)
            while self.step < len(batches):
                t0 = time.perf_counter()
                losses = self.train_step(batches[self.step])
                self.running["time"] += time.perf_counter() - t0
                for k in ("loss", "triplet", "vsl", "vsl_text"):
                    self.running[k] += losses.get(k, 0.0)
                self.running["n"] += 1
                self.step += 1
                self.global_step += 1
                steps_this_call += 1
                bar.update({k: losses[k] for k in ("loss", "triplet", "vsl")})
                if writer is not None and self.global_step % 10 == 0:
                    for k, v in losses.items():
                        writer.add_scalar(f"train/{k}", v, self.global_step)
                if (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 and self.step < len(batches)
                        and self.is_main):
                    self.save()
                if crash_after_steps is not None and steps_this_call >= crash_after_steps:
                    bar.close()
                    raise KeyboardInterrupt(f"simulated kill after {steps_this_call} steps")
            bar.close()
            if not self.is_main:  # rank 0 validates and writes; the others wait for it
                self.epoch, self.step = epoch + 1, 0
                self.ctx.barrier()
                continue
            t0 = time.perf_counter()
            val = self.validate()
            n = max(1, self.running["n"])
            record = {"epoch": epoch + 1, "global_step": self.global_step, "lr": lr,
                      **{f"train_{k}": self.running[k] / n for k in ("loss", "triplet", "vsl", "vsl_text")},
                      "train_seconds": round(self.running["time"], 3),
                      "val_seconds": round(time.perf_counter() - t0, 3),
                      **{f"val_{k}": v for k, v in val.items()}}
            self.history.append(record)
            self.log(f"epoch {epoch + 1}/{cfg.epochs} lr {lr:.2g} loss {record['train_loss']:.4f} "
                     f"(triplet {record['train_triplet']:.4f}, vsl {record['train_vsl']:.4f}) | val {format_metrics(val)}")
            if writer is not None:
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, self.global_step)
                writer.flush()
            self.epoch, self.step = epoch + 1, 0
            self.running = {k: 0.0 if k != "n" else 0 for k in self.running}
            if val["rsum"] > self.best["rsum"]:
                self.best = {"rsum": val["rsum"], "epoch": epoch + 1}
                atomic_save(self.checkpoint(), self.best_path)
            self.save()
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.ctx is not None:
                self.ctx.barrier()
        if writer is not None:
            writer.close()
        summary = self.finish() if self.is_main else {}
        if self.ctx is not None:
            self.ctx.close()
        return summary

    def finish(self) -> dict:
        """Test the best checkpoint (when a test split exists) and write ``results.json``."""
        cfg = self.cfg
        summary = {"output": cfg.output, "best_epoch": self.best["epoch"], "best_val_rsum": self.best["rsum"],
                   "epochs": self.epoch, "global_step": self.global_step, "test": None,
                   "train_seconds": sum(h["train_seconds"] for h in self.history)}
        self.test_sims = None
        split = cfg.test_split
        if split == "auto":
            coco = (cfg.dataset or "").lower().startswith("coco")
            split = "testall" if coco and os.path.isfile(split_paths(self.data_dir, "testall")[1]) else "test"
            if not os.path.isfile(split_paths(self.data_dir, split)[1]):
                split = None
        if split and os.path.isfile(self.best_path):
            best = torch.load(self.best_path, map_location="cpu", weights_only=False)
            model = build_model(cfg.model, **best["model"]["config"]).to(self.device)
            model.load_state_dict(best["model"]["state_dict"])
            data = PrecompSplit(self.data_dir, split, self.vocab, cfg.captions_per_image)
            protocols = default_protocols(cfg.dataset, split, data.num_images)
            summary["test"], self.test_sims = evaluate_model(model, data, self.device, protocols, return_sims=True)
            summary["test_split"] = split
            for proto, m in summary["test"].items():
                self.log(f"test ({split}, {proto}, best epoch {self.best['epoch']}): {format_metrics(m)}")
        atomic_write_text(os.path.join(cfg.output, "results.json"), json.dumps(summary, indent=1))
        return summary


def train(cfg: TrainConfig, log: Callable[[str], None] = print, index_factory: Optional[Callable] = None,
          crash_after_steps: Optional[int] = None) -> dict:
    """Train (or resume) one run; returns the summary written to ``results.json``."""
    return Trainer(cfg, log, index_factory).run(crash_after_steps)


# ----------------------------------------------------------------------------- the demo

DEMO_METRICS = (("i2t_r1", "i2t R@1"), ("i2t_r5", "i2t R@5"), ("i2t_r10", "i2t R@10"),
                ("t2i_r1", "t2i R@1"), ("t2i_r5", "t2i R@5"), ("t2i_r10", "t2i R@10"), ("rsum", "rsum"))


def demo_config(data: str, output: str, seed: int, vsl: bool, epochs: Optional[int] = None, device: str = "auto",
                progress: bool = True, threads: int = 1) -> TrainConfig:
    """The demo's fixed recipe: ``vse`` (128-d joint space, mean pooling), batch 128, Adam 3e-4 for
    10 epochs then 3e-5, 15 epochs, triplet (margin 0.2, hardest negatives) [+ 10 * VSL, tau 1e-3,
    TF-IDF semantic similarity]. Only ``vsl`` differs between the two arms."""
    return TrainConfig(data=data, dataset="synthetic", output=output, model="vse", vsl=vsl, embed_size=128,
                       word_dim=64, batch_size=128, epochs=epochs or 15, lr=3e-4, lr_update=10, seed=seed,
                       device=device, progress=progress, tensorboard=False, test_split="test", threads=threads,
                       overwrite=True)


def _mean_std(values: Sequence[float]):
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def demo_table(results: Dict[str, List[dict]], seeds: Sequence[int]) -> str:
    """Markdown table: mean +- sample std over seeds for baseline and VSL, their difference and how
    many seeds VSL wins."""
    lines = [f"| metric (test, {len(seeds)} seeds) | triplet (baseline) | triplet + 10 VSL | difference | VSL better in |",
             "|---|---|---|---|---|"]
    for key, label in DEMO_METRICS:
        b = [r[key] for r in results["baseline"]]
        v = [r[key] for r in results["vsl"]]
        (bm, bs), (vm, vs) = _mean_std(b), _mean_std(v)
        wins = sum(x > y for x, y in zip(v, b))
        lines.append(f"| {label} | {bm:.1f} ± {bs:.1f} | {vm:.1f} ± {vs:.1f} | {vm - bm:+.1f} | {wins}/{len(seeds)} seeds |")
    return "\n".join(lines)


def demo_diagnostics(diagnostics: Dict[str, List[dict]]) -> str:
    """Markdown table of :func:`vsl_ext.data.synthetic.failure_analysis`, mean over seeds."""
    def mean(arm, key):
        return float(np.mean([d[key] for d in diagnostics[arm]]))
    rows = [("t2i top-1 image consistent with the caption (%)", "consistent", "{:.1f}"),
            ("t2i top-1 errors of the Fig.-1 kind: object only secondary there (%)", "secondary_match", "{:.1f}"),
            ("rank agreement of S with the caption similarity C (Spearman)", "rank_agreement", "{:.3f}")]
    lines = ["| diagnostic | triplet (baseline) | triplet + 10 VSL |", "|---|---|---|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(mean('baseline', key))} | {fmt.format(mean('vsl', key))} |")
    oracle = mean("baseline", "oracle_t2i_r1")
    lines.append(f"| t2i R@1 ceiling: random pick among caption-consistent images (%) | {oracle:.1f} | {oracle:.1f} |")
    return "\n".join(lines)


def demo_chart(results: Dict[str, List[dict]], path: str) -> bool:
    """Grouped bar chart (mean, error bar = std over seeds); False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = [k for k, _ in DEMO_METRICS if k != "rsum"]
    labels = [lab for k, lab in DEMO_METRICS if k != "rsum"]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, 4))
    for off, arm, name in ((-0.2, "baseline", "triplet (baseline)"), (0.2, "vsl", "triplet + 10 VSL")):
        stats = [_mean_std([r[k] for r in results[arm]]) for k in keys]
        ax.bar(x + off, [m for m, _ in stats], 0.4, yerr=[s for _, s in stats], capsize=3, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("recall (%)")
    ax.set_title(f"Synthetic Fig.-1 data, vse, test set, mean ± std over {len(results['vsl'])} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run_demo(output: str = os.path.join("runs", "demo"), seeds: Sequence[int] = (0, 1, 2), epochs: Optional[int] = None,
             device: str = "auto", progress: bool = True, log: Callable[[str], None] = print,
             index_factory: Optional[Callable] = None, threads: int = 1) -> dict:
    """``vsl-train --demo``: generate the synthetic data, train the two arms for every seed, write
    ``results.md``, ``results.png`` and ``results.json`` to ``output`` and print the table.

    ``threads`` defaults to 1: the demo's small matrices gain nothing from more threads, and torch's
    OpenMP threads slow down badly when the cores are shared with other processes."""
    from .data.synthetic import SyntheticConfig, failure_analysis, generate

    t_start = time.perf_counter()
    data = os.path.join(output, "data")
    syn = SyntheticConfig()
    splits = generate(data, syn)
    log(f"synthetic data in {data}: {syn.train_images}/{syn.dev_images}/{syn.test_images} images, "
        f"{syn.regions} regions x {syn.feat_dim}, main object on {syn.main_regions[0]}-{syn.main_regions[1]} regions, "
        f"{syn.secondary_objects[0]}-{syn.secondary_objects[1]} secondary objects on "
        f"{syn.secondary_regions[0]}-{syn.secondary_regions[1]} regions, captions describe the main object only")
    results: Dict[str, List[dict]] = {"baseline": [], "vsl": []}
    diagnostics: Dict[str, List[dict]] = {"baseline": [], "vsl": []}
    test_feats, test_caps, test_meta = splits["test"]
    groups = [test_caps[i * syn.captions_per_image:(i + 1) * syn.captions_per_image] for i in range(len(test_meta))]
    make_index = index_factory or caption_index_class().from_captions
    test_sem = make_index(groups, mode="tfidf").image_similarity(np.arange(len(test_meta))).cpu().numpy()
    quiet = (lambda msg: None)
    for seed in seeds:
        for arm in ("baseline", "vsl"):
            cfg = demo_config(data, os.path.join(output, f"{arm}_seed{seed}"), seed, arm == "vsl", epochs, device,
                              progress, threads)
            t0 = time.perf_counter()
            trainer = Trainer(cfg, quiet, index_factory)
            summary = trainer.run()
            test = summary["test"]["full"]
            results[arm].append(test)
            diagnostics[arm].append(failure_analysis(trainer.test_sims, test_meta, test_caps, test_sem))
            log(f"seed {seed} {arm:8s} ({time.perf_counter() - t0:5.1f} s, best epoch {summary['best_epoch']}): "
                f"{format_metrics(test)}")
    table = demo_table(results, seeds)
    diag = demo_diagnostics(diagnostics)
    elapsed = time.perf_counter() - t_start
    log("")
    log(table)
    log("")
    log(diag)
    cfg = demo_config(data, output, 0, True, epochs)
    chart = demo_chart(results, os.path.join(output, "results.png"))
    md = ["# vsl-train --demo", "",
          "Synthetic SCAN-format data built after the failure case of the VSL paper's Fig. 1: every image has a "
          "main object over many regions and small secondary objects, its captions describe the main object only, "
          "and half of the secondary objects repeat another image's main content. Same model, data and seeds in "
          "both arms; only the VSL term differs. Test split, best-validation-rsum epoch.", "",
          table, "",
          "What the text-to-image errors are made of (test split, mean over seeds):", "",
          diag, "",
          f"Recipe: model vse (embed {cfg.embed_size}, mean pooling), batch {cfg.batch_size}, {cfg.epochs} epochs, "
          f"Adam lr {cfg.lr:g} then x{cfg.lr_decay:g} after epoch {cfg.lr_update}, margin {cfg.margin}, "
          f"beta {cfg.beta:g}, tau {cfg.tau:g}, seeds {list(seeds)}; total wall time {elapsed:.0f} s.", "",
          *(["![R@K](results.png)", ""] if chart else [])]
    atomic_write_text(os.path.join(output, "results.md"), "\n".join(md))
    summary = {"seeds": list(seeds), "results": results, "diagnostics": diagnostics, "synthetic_config": asdict(syn),
               "train_config": asdict(cfg), "seconds": elapsed, "table": table}
    atomic_write_text(os.path.join(output, "results.json"), json.dumps(summary, indent=1))
    written = ["results.md", "results.json"] + (["results.png"] if chart else [])
    log(f"\ntotal {elapsed:.0f} s; written to {output}: {', '.join(written)}")
    if not chart:
        log("matplotlib is not installed: no results.png (pip install matplotlib, or the train extra)")
    return summary


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="vsl-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", help="SCAN precomp folder ({split}_ims.npy + {split}_caps.txt), or its parent "
                   "holding {dataset}_precomp/")
    g.add_argument("--dataset", help="dataset name (coco, f30k, ...): folder lookup and evaluation protocol")
    g.add_argument("--captions-per-image", type=int, default=d.captions_per_image)
    g.add_argument("--vocab", help="SCAN vocab json to use instead of building one from the training captions")
    g.add_argument("--vocab-min-count", type=int, default=d.vocab_min_count)
    g.add_argument("--val-split", default=d.val_split)
    g.add_argument("--test-split", default=d.test_split, help="split tested with the best model after training "
                   "('auto': testall for coco, else test, if present; 'none' to skip)")
    g.add_argument("--val-images", type=int, default=d.val_images, help="validate on the first N images "
                   "(0: all; coco default 1000)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default=d.model)
    g.add_argument("--embed-size", type=int, default=d.embed_size)
    g.add_argument("--word-dim", type=int, default=d.word_dim)
    g.add_argument("--num-layers", type=int, default=d.num_layers)
    g.add_argument("--sim-dim", type=int, default=d.sim_dim, help="sgr/saf similarity vector size")
    g.add_argument("--sgr-step", type=int, default=d.sgr_step)
    g.add_argument("--pooling", choices=("mean", "gpo"), default=d.pooling, help="vse pooling")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g = p.add_argument_group("loss")
    g.add_argument("--no-vsl", action="store_true", help="triplet loss only (the baseline)")
    g.add_argument("--alpha", type=float, default=d.alpha, help="triplet weight")
    g.add_argument("--beta", type=float, default=d.beta, help="VSL weight")
    g.add_argument("--margin", type=float, default=d.margin)
    g.add_argument("--no-max-violation", action="store_true", help="sum over all negatives instead of the hardest")
    g.add_argument("--tau", type=float, default=d.tau)
    g.add_argument("--text-side", action="store_true", help="add the text-side loss L_ts (Eq. 7)")
    g.add_argument("--variant", choices=("row", "public-code"), default=d.variant)
    g.add_argument("--semantic", choices=("tfidf", "cider-d"), default=d.semantic,
                   help="caption similarity behind the semantic ranks")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}; with --resume: the run's own")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--lr-update", type=int, default=d.lr_update, help="multiply lr by --lr-decay every N epochs")
    g.add_argument("--lr-decay", type=float, default=d.lr_decay)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("runtime")
    g.add_argument("--output", default=None, help="run folder (default runs/<dataset>_<model>[_novsl])")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch default; "
                   "the demo uses 1 unless set)")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="also checkpoint every N steps (0: at epoch ends only)")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    g.add_argument("--global-batch", action="store_true",
                   help="under torchrun: one exact global batch of --batch-size pairs sharded over the ranks "
                        "(vse model; see vsl_ext.global_batch)")
    g.add_argument("--overwrite", action="store_true", help="start a new run even if --output holds one")
    g = p.add_argument_group("demo")
    g.add_argument("--demo", action="store_true", help="synthetic Fig.-1 data: train vse baseline and vse+VSL "
                   "over several seeds on CPU and print a side-by-side R@K table")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="demo training seeds")
    g.add_argument("--demo-epochs", type=int, default=None, help="override the demo's epoch count")
    return p


def config_from_args(args) -> TrainConfig:
    name = args.dataset or (os.path.basename(os.path.normpath(args.data)) if args.data else "run")
    output = args.output or os.path.join("runs", f"{name}_{args.model}{'_novsl' if args.no_vsl else ''}")
    test_split = None if str(args.test_split).lower() == "none" else args.test_split
    return TrainConfig(
        data=args.data, dataset=args.dataset, output=output, model=args.model, vsl=not args.no_vsl,
        alpha=args.alpha, beta=args.beta, margin=args.margin, max_violation=not args.no_max_violation,
        tau=args.tau, text_side=args.text_side, variant=args.variant, semantic=args.semantic,
        embed_size=args.embed_size, word_dim=args.word_dim, num_layers=args.num_layers, sim_dim=args.sim_dim,
        sgr_step=args.sgr_step, pooling=args.pooling, dropout=args.dropout,
        captions_per_image=args.captions_per_image, vocab=args.vocab, vocab_min_count=args.vocab_min_count,
        val_split=args.val_split, test_split=test_split, val_images=args.val_images,
        batch_size=args.batch_size,
        epochs=args.epochs if args.epochs is not None else (0 if args.resume else TrainConfig.epochs), lr=args.lr, lr_update=args.lr_update,
        lr_decay=args.lr_decay, grad_clip=args.grad_clip, seed=args.seed, device=args.device,
        threads=args.threads, progress=not args.no_progress, tensorboard=not args.no_tensorboard,
        checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite,
        global_batch=args.global_batch)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo:
        run_demo(output=args.output or os.path.join("runs", "demo"), seeds=args.seeds, epochs=args.demo_epochs,
                 device=args.device, progress=not args.no_progress, threads=args.threads or 1)
        return 0
    if args.data is None and not args.resume:
        parser.error("--data DIR is required (or --demo, or --resume with --output)")
    if args.resume and args.output is None:
        parser.error("--resume needs --output RUN_DIR (the folder holding checkpoint.pth)")
    cfg = config_from_args(args)
    try:
        trainer = Trainer(cfg)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"vsl-train: error: {exc}", file=sys.stderr)
        return 2
    trainer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
