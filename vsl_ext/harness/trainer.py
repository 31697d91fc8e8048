"""One training run: ``Trainer`` trains, validates, checkpoints, resumes and tests.

Output folder: ``checkpoint.pth`` (latest state, written atomically at every epoch end and every
``--checkpoint-every`` steps), ``model_best.pth`` (best validation rsum), ``metrics.jsonl`` (one line
per epoch), ``config.json``, ``vocab.json``, ``results.json`` and TensorBoard logs if tensorboard is
installed. A run killed at any point continues with ``--resume`` from its last checkpoint and ends
in exactly the state an uninterrupted run reaches (batch order and dropout masks are functions of
the seed and the step; the RNG state is part of the checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from .._atomic import atomic_write
from ..caption_files import read_scan_captions
from ..criterion import VSLCriterion
from ..metrics import format_metrics
from .checkpoint_io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, rng_state, save_checkpoint, set_rng_state
from .config import RESUME_MUTABLE, SEMANTICS, VARIANTS, TrainConfig
from .data import PrecompSplit, Vocabulary, resolve_data_dir
from .data.phrase_units import phrase_cache_path
from .data.precomp import split_paths
from .data.segmentation import attach_segmentation
from .data.wordpiece import WordPieceVocabulary, tokenizer_spec, vocabulary_from_checkpoint
from .evaluate import (
    DEFAULT_THREADS,
    RESUME_KEYS,
    default_protocols,
    evaluate_model,
    load_state,
    pick_device,
    read_checkpoint,
    set_threads,
)
from .models import MODELS, PAIRWISE_HEADS, SEGMENTATION_MODELS, build_model
from .models.dropout import sample_seeds
from .phrase_training import PhraseStep, needs_phrase_units, phrase_vocabulary, validate_phrase_options


class CheckpointMismatch(ValueError):
    pass


def atomic_save(obj, path: str) -> None:
    """The checkpoint dict ``obj`` to ``path`` in plain types and tensors (read back with
    ``weights_only=True``), via a temporary file and os.replace: a kill leaves the old or the new file."""
    save_checkpoint(obj, path)


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
        from ..caption_index import CaptionIndex
    except ImportError as exc:
        raise ImportError("vsl_ext.CaptionIndex (vsl_ext/caption_index.py) is needed for the VSL term's semantic "
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
    if cfg.variant not in VARIANTS:
        raise ValueError(f"--variant must be one of {VARIANTS}, got {cfg.variant!r}")
    if cfg.semantic not in SEMANTICS:
        raise ValueError(f"--semantic must be one of {SEMANTICS}, got {cfg.semantic!r}")
    if cfg.captions_per_image < 1:
        raise ValueError(f"--captions-per-image must be >= 1, got {cfg.captions_per_image}")
    if cfg.global_batch and (cfg.model != "vse" or cfg.variant != "row" or cfg.text_side):
        raise ValueError("--global-batch needs --model vse (separate image and caption embeddings), --variant row "
                         "and no --text-side: those are the parts of the loss that shard by rows")
    if cfg.text_encoder != "bigru" and cfg.model != "3shnet":
        raise ValueError(f"--text-encoder {cfg.text_encoder} is for --model 3shnet")
    if cfg.text_encoder == "bert" and not cfg.bert_path:
        raise ValueError("--text-encoder bert needs --bert-path DIR (a local BERT checkpoint folder)")
    if cfg.max_violation_warmup < 0:
        raise ValueError(f"--max-violation-warmup must be >= 0, got {cfg.max_violation_warmup}")
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 0):
        raise ValueError(f"--threads must be an integer >= 0 (0: torch's default), got {cfg.threads!r}")
    if not 0 <= cfg.region_drop < 1:
        raise ValueError(f"--region-drop must lie in [0, 1), got {cfg.region_drop}")
    validate_phrase_options(cfg)


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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training between two steps, after the state was saved to ``checkpoint``."""

    def __init__(self, checkpoint: str, epochs_done: int, step: int):
        super().__init__(f"interrupted after {epochs_done} epochs and {step} steps; state saved to {checkpoint}")
        self.checkpoint, self.epochs_done, self.step = checkpoint, epochs_done, step


class _StopOnInterrupt:
    """While active (in the main thread, where SIGINT has Python's default handler): the first Ctrl-C
    (SIGINT) only sets ``requested``, so that training stops after the current step and saves a
    checkpoint it can resume from exactly; a second Ctrl-C raises KeyboardInterrupt at once. An
    ignored SIGINT (``nohup``, a background job) or another handler is left alone."""

    def __init__(self, enabled: bool):
        self.enabled = (enabled and threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False


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
            ckpt = read_checkpoint(ckpt_path, RESUME_KEYS)
            try:
                stored = TrainConfig(**ckpt["config"])
            except TypeError as exc:
                raise ValueError(f"{ckpt_path} holds a run config this vsl_ext does not know ({exc})") from None
            runtime = {k: getattr(cfg, k) for k in RESUME_MUTABLE}
            if runtime["epochs"] <= 0:          # not given on the command line: keep the run's own
                runtime["epochs"] = stored.epochs
            if runtime["threads"] is None:      # the results depend on it: keep the run's own
                runtime["threads"] = stored.threads
            if runtime["device"] is None:       # likewise
                runtime["device"] = stored.device
            elif runtime["threads"] != stored.threads:
                log(f"note: the run used --threads {stored.threads}, this call {runtime['threads']}: float sums "
                    f"add up in another order, so the numbers may differ slightly from an uninterrupted run")
            if cfg.data is not None:             # the data folder may have moved
                runtime["data"] = cfg.data
            cfg = dataclasses.replace(stored, **runtime)
            if cfg.data is None:
                raise ValueError("the checkpoint does not name its data folder")
        try:
            validate_config(cfg)
        except TypeError as exc:   # a value of the wrong type (a checkpoint's config; the CLI parses types)
            raise ValueError(f"bad run config: {exc}") from None
        if cfg.threads is None:
            cfg = dataclasses.replace(cfg, threads=DEFAULT_THREADS)
        if cfg.device is None:
            cfg = dataclasses.replace(cfg, device="auto")
        self.cfg = cfg
        if cfg.data is None:
            raise ValueError("--data DIR is required (or --demo)")
        set_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        self.ctx = None  # vsl_ext.harness.global_batch.GlobalBatch under torchrun --global-batch
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
            self.vocab = vocabulary_from_checkpoint(ckpt)
        elif cfg.text_encoder == "bert":
            self.vocab = WordPieceVocabulary.from_pretrained_dir(cfg.bert_path)
        elif cfg.vocab:
            self.vocab = Vocabulary.load(cfg.vocab)
        else:
            if not os.path.isfile(train_caps):
                PrecompSplit(self.data_dir, cfg.train_split, None, cpi)   # raises the descriptive error
            if needs_phrase_units(cfg):    # the phrase units' lemmas ("ride") join the captions' words
                self.vocab = phrase_vocabulary(self.data_dir, cfg, read_scan_captions(train_caps))
            else:
                self.vocab = Vocabulary.build(read_scan_captions(train_caps), cfg.vocab_min_count)
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
        if cfg.model in SEGMENTATION_MODELS:
            seg = attach_segmentation(self.train_data)
            val_seg = attach_segmentation(self.val_data)
            if val_seg.num_classes != seg.num_classes:
                raise ValueError(f"{val_seg.paths['score_maps']} has {val_seg.num_classes} segmentation classes but "
                                 f"{seg.paths['score_maps']} has {seg.num_classes}")
            self.data_signature["segmentation"] = seg.signature()
        if ckpt is not None and ckpt["data"] != self.data_signature:
            raise CheckpointMismatch(f"the checkpoint was trained on {ckpt['data']} but {self.data_dir} holds "
                                     f"{self.data_signature}")

        # model, loss, optimiser (seeded before construction so the init is reproducible)
        seed_everything(cfg.seed)
        model_cfg = dict(img_dim=self.train_data.img_dim, vocab_size=len(self.vocab), embed_size=cfg.embed_size,
                         word_dim=cfg.word_dim, num_layers=cfg.num_layers, dropout=cfg.dropout)
        if cfg.model == "vse":
            model_cfg["pooling"] = cfg.pooling
        elif cfg.model == "3shnet":
            model_cfg.update(num_classes=self.train_data.segmentation.num_classes, text_encoder=cfg.text_encoder,
                             bert_path=cfg.bert_path, spatial_dim=cfg.spatial_dim, region_drop=cfg.region_drop)
            if ckpt is not None:    # the checkpoint holds BERT's weights; its folder is not read again
                model_cfg["bert_config"] = ckpt["model"]["config"].get("bert_config")
        else:
            model_cfg.update(sim_dim=cfg.sim_dim, sgr_step=cfg.sgr_step, num_regions=self.train_data.num_regions)
        self.model = build_model(cfg.model, **model_cfg).to(self.device)
        beta = cfg.beta if cfg.vsl else 0.0
        self.criterion = VSLCriterion(cfg.margin, cfg.max_violation, cfg.alpha, beta, cfg.tau,
                                      cfg.text_side, cfg.variant)
        groups = self.model.parameter_groups() if hasattr(self.model, "parameter_groups") else None
        self.optimizer = torch.optim.Adam(groups or self.model.parameters(), lr=cfg.lr)
        self.phrase_step = PhraseStep.for_run(cfg, self.train_data) if needs_phrase_units(cfg) else None
        self.index = None
        if beta > 0:
            factory = index_factory or caption_index_class().from_captions
            extra = ({"phrase_cache": phrase_cache_path(self.train_data.caps_path, cfg.output)}
                     if cfg.semantic == "phrases" else {})
            self.index = factory(self.train_data.caption_groups(), mode=cfg.semantic, **extra)

        # progress state
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.best = {"rsum": -1.0, "epoch": -1}
        self.history: List[dict] = []
        self.running = {"loss": 0.0, "triplet": 0.0, "vsl": 0.0, "vsl_text": 0.0, "phrase": 0.0, "n": 0, "time": 0.0}
        if ckpt is not None:
            load_state(self.model, ckpt["model"]["state_dict"], ckpt_path)
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
                set_rng_state(ckpt["rng"])
            except (KeyError, TypeError, RuntimeError, ValueError) as exc:
                raise ValueError(f"{ckpt_path} holds an optimizer or random state this run cannot take "
                                 f"({type(exc).__name__}: {exc})") from None
            self.epoch, self.step, self.global_step = ckpt["epoch"], ckpt["step"], ckpt["global_step"]
            self.best, self.history, self.running = ckpt["best"], ckpt["history"], {**self.running, **ckpt["running"]}
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
        atomic_write(os.path.join(cfg.output, "config.json"), json.dumps(asdict(cfg), indent=1))
        self.vocab.save(os.path.join(cfg.output, "vocab.json"))
        # metrics.jsonl always mirrors the checkpoint's history (lines written after it are dropped)
        atomic_write(self.metrics_path, "".join(json.dumps(h) + "\n" for h in self.history))

    # -- checkpoints
    def model_spec(self) -> dict:
        return {"name": self.cfg.model, "config": self.model.config, "state_dict": self.model.state_dict()}

    def checkpoint(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": asdict(self.cfg),
                "model": self.model_spec(), "vocab": list(self.vocab.idx2word), "tokenizer": tokenizer_spec(self.vocab),
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
        phrase_terms = None
        if self.phrase_step is not None:  # (its word dropout draws from torch's generator: no per-sample seeds)
            sims, phrase_terms = self.phrase_step(self.model, batch, dev)
        else:
            seeds = sample_seeds(self.cfg.seed, self.global_step, np.arange(len(caption_ids)))
            sims = self.model(batch["images"].to(dev), batch["tokens"].to(dev), batch["lengths"].to(dev), seeds)
        image_sem = caption_sem = None
        if self.index is not None:
            image_sem = self.index.image_similarity(batch["image_ids"], device=dev)
            if self.cfg.text_side:
                caption_sem = self.index.caption_similarity(batch["caption_ids"], device=dev)
        out = self.criterion(sims, image_sem, caption_sem)
        if phrase_terms is not None:
            out = self.phrase_step.combine(out, phrase_terms)
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
        seeds = sample_seeds(cfg.seed, self.global_step, offset + np.arange(len(local_ids)))
        out = global_batch_losses(self.model, self.train_data.batch(local_ids), offset, image_sem, cfg.margin,
                                  self.criterion.max_violation, cfg.alpha, cfg.beta if self.index is not None else 0.0,
                                  cfg.tau, self.device, self.ctx, seeds)
        self.optimizer.zero_grad(set_to_none=True)
        out.pop("objective").backward()
        self.ctx.average_gradients(list(self.model.parameters()))
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in out.items()}

    def validate(self) -> Dict[str, float]:
        n = self.cfg.val_images or (1000 if (self.cfg.dataset or "").lower().startswith("coco") else None)
        return evaluate_model(self.model, self.val_data, self.device, ("full",), max_images=n,
                              progress=self.cfg.progress and self.is_main)["full"]

    def run(self, crash_after_steps: Optional[int] = None) -> dict:
        """Train the remaining epochs; ``crash_after_steps`` (tests) raises after that many steps of
        this call without saving, like a kill."""
        cfg = self.cfg
        writer = _tensorboard_writer(cfg, self.global_step) if self.is_main else None
        if self.resumed:
            self.log(f"resuming {cfg.output} at epoch {self.epoch + 1}, step {self.step} "
                     f"(global step {self.global_step})")
        self.log(f"{cfg.model} on {self.train_data} | val {self.val_data} | vocab {len(self.vocab)} | "
                 f"{'triplet + %g * VSL' % cfg.beta if self.index is not None else 'triplet only (baseline)'}"
                 f"{' + %g * phrase-level' % cfg.phrase_weight if cfg.phrase_level else ''} | "
                 f"device {self.device}")
        if cfg.model in PAIRWISE_HEADS and self.device.type == "cpu":
            self.log(f"note: {cfg.model} scores every image-caption pair with its head, which is slow on a CPU "
                     f"(on 2 cores one epoch of 5,000 captions takes minutes, against seconds for vse: README.md, "
                     f"'Models in the harness'); use --device cuda, or vse / ssamt / 3shnet on a CPU")
        with _StopOnInterrupt(self.ctx is None) as stop:
            self._train_epochs(writer, stop, crash_after_steps)
        if writer is not None:
            writer.close()
        summary = self.finish() if self.is_main else {}
        if self.ctx is not None:
            self.ctx.close()
        return summary

    def _interrupted(self, bar=None) -> TrainingInterrupted:
        """Save the state (between two steps) and return the exception that stops the run."""
        if bar is not None:
            bar.close()
        self.save()
        return TrainingInterrupted(self.ckpt_path, self.epoch, self.step)

    def _train_epochs(self, writer, stop: _StopOnInterrupt, crash_after_steps: Optional[int]) -> None:
        cfg = self.cfg
        steps_this_call = 0
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            lr = lr_at(cfg, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            self.criterion.max_violation = cfg.max_violation and epoch >= cfg.max_violation_warmup
            batches = self.train_data.epoch_batches(cfg.batch_size, cfg.seed, epoch)
            self.model.train()
            bar = _Progress(len(batches), self.step, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and self.is_main)
            while self.step < len(batches):
                if stop.requested:
                    raise self._interrupted(bar)
                t0 = time.perf_counter()
                losses = self.train_step(batches[self.step])
                self.running["time"] += time.perf_counter() - t0
                for k in ("loss", "triplet", "vsl", "vsl_text", "phrase"):
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
                      **{f"train_{k}": self.running[k] / n for k in ("loss", "triplet", "vsl", "vsl_text", "phrase")},
                      "train_seconds": round(self.running["time"], 3),
                      "val_seconds": round(time.perf_counter() - t0, 3),
                      **{f"val_{k}": v for k, v in val.items()}}
            self.history.append(record)
            self.log(f"epoch {epoch + 1}/{cfg.epochs} lr {lr:.2g} loss {record['train_loss']:.4f} "
                     f"(triplet {record['train_triplet']:.4f}, vsl {record['train_vsl']:.4f}) "
                     f"| val {format_metrics(val)}")
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
        if stop.requested:      # during the last validation: the checkpoint holds the trained run
            raise self._interrupted()

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
            best = read_checkpoint(self.best_path)
            model = build_model(cfg.model, **best["model"]["config"]).to(self.device)
            model.load_state_dict(best["model"]["state_dict"])
            data = PrecompSplit(self.data_dir, split, self.vocab, cfg.captions_per_image)
            if cfg.model in SEGMENTATION_MODELS:
                attach_segmentation(data)
            protocols = default_protocols(cfg.dataset, split, data.num_images)
            summary["test"], self.test_sims = evaluate_model(model, data, self.device, protocols, return_sims=True,
                                                             progress=cfg.progress)
            summary["test_split"] = split
            for proto, m in summary["test"].items():
                self.log(f"test ({split}, {proto}, best epoch {self.best['epoch']}): {format_metrics(m)}")
        atomic_write(os.path.join(cfg.output, "results.json"), json.dumps(summary, indent=1))
        return summary


def train(cfg: TrainConfig, log: Callable[[str], None] = print, index_factory: Optional[Callable] = None,
          crash_after_steps: Optional[int] = None) -> dict:
    """Train (or resume) one run; returns the summary written to ``results.json``."""
    return Trainer(cfg, log, index_factory).run(crash_after_steps)
