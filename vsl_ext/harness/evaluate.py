"""Evaluate retrieval models and checkpoints: ``vsl-eval CHECKPOINT [CHECKPOINT ...] --data DIR``.

Images and captions are encoded once; the (images x captions) similarity matrix is then filled in
shards (``--shard`` images x captions at a time, as SCAN/SGRAF do), so COCO 5K (5,000 x 25,000) needs
only the 500 MB result matrix plus one shard on the device.

Several checkpoints form an ensemble, as SGRAF (``evaluation.py``: SGR + SAF) and 3SHNet
(``eval_ensemble.py``) evaluate theirs: the metrics are computed on the element-wise mean of the
models' own similarity matrices (cosine similarities for ``vse``/``3shnet``, the sigmoid scores of the
``sgr``/``saf`` heads), each model reading the captions with its own vocabulary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._atomic import atomic_open, atomic_write
from ..metrics import (
    COCO_5K_SHAPE,
    average_semantic_precision,
    coco_5k_test_ids,
    eccv_caption_metrics,
    evaluate_protocol,
    format_eccv_metrics,
    format_metrics,
    rank_agreement,
)
from .checkpoint_io import CHECKPOINT_FORMAT, UnsafeCheckpoint, load_weights_only
from .data import PrecompSplit, resolve_data_dir
from .data.precomp import split_paths
from .data.segmentation import attach_segmentation
from .data.wordpiece import vocabulary_from_checkpoint
from .models import SEGMENTATION_MODELS, build_model
from .phrase_training import caption_extras

# torch CPU threads of vsl-train, vsl-eval and the demo unless --threads is given: one thread is the
# fastest for the harness's small models on small or shared machines (docs/training.md, "Threads")
DEFAULT_THREADS = 1


def set_threads(threads: int) -> None:
    """Use ``threads`` torch CPU threads (0: leave torch's default, one per physical core). Results
    depend on the count: reductions add floats in an order that follows the threads."""
    if threads > 0:
        torch.set_num_threads(threads)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return dev


@torch.no_grad()
def encode_split(model, split: PrecompSplit, device, batch_size: int = 128,
                 max_images: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings of the split's first ``max_images`` images (all by default) and of their captions.

    Returns (img_emb, cap_emb, cap_lengths) on the CPU; word-level caption embeddings (SGRAF) are
    zero-padded to the longest caption.
    """
    was_training = model.training
    model.eval()
    n_img = split.num_images if not max_images else min(max_images, split.num_images)
    n_cap = n_img * split.captions_per_image
    imgs = [model.encode_images(split.images(np.arange(a, min(n_img, a + batch_size))).to(device)).float().cpu()
            for a in range(0, n_img, batch_size)]
    caps, lens = [], []
    for a in range(0, n_cap, batch_size):
        ids = np.arange(a, min(n_cap, a + batch_size))
        tokens, lengths = split.caption_tokens(ids)
        extra = caption_extras(model, split, ids, device)   # ssamt: the captions' phrase units
        caps.append(model.encode_captions(tokens.to(device), lengths.to(device), **extra).float().cpu())
        lens.append(lengths)
    model.train(was_training)
    if caps[0].dim() == 3:
        width = max(c.shape[1] for c in caps)
        caps = [torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[1])) for c in caps]
    return torch.cat(imgs), torch.cat(caps), torch.cat(lens)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (``update(n)``, ``close()``), or None when not ``enabled`` or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


@torch.no_grad()
def compute_sims(model, img_emb: torch.Tensor, cap_emb: torch.Tensor, lengths: torch.Tensor, device,
                 shard: int = 128, progress: bool = False) -> np.ndarray:
    """(n_img, n_cap) float32 similarities, computed ``shard`` x ``shard`` blocks at a time on ``device``;
    ``progress``: a bar over the images scored (the pairwise heads sgr/saf take minutes on a CPU)."""
    was_training = model.training
    model.eval()
    n_img, n_cap = img_emb.shape[0], cap_emb.shape[0]
    sims = np.empty((n_img, n_cap), dtype=np.float32)
    cap_shard = shard if cap_emb.dim() == 3 else max(shard, 4096)
    img_shard = shard if cap_emb.dim() == 3 else max(shard, 1024)
    bar = progress_bar(n_img, "similarities (images)", progress and n_img > img_shard)
    for a in range(0, n_img, img_shard):
        im = img_emb[a:a + img_shard].to(device)
        for c in range(0, n_cap, cap_shard):
            ln = lengths[c:c + cap_shard]
            ca = cap_emb[c:c + cap_shard]
            if ca.dim() == 3:
                ca = ca[:, :int(ln.max())]
            block = model.similarity(im, ca.to(device), ln.to(device))
            sims[a:a + img_shard, c:c + cap_shard] = block.float().cpu().numpy()
        if bar is not None:
            bar.update(min(img_shard, n_img - a))
    if bar is not None:
        bar.close()
    model.train(was_training)
    return sims


def evaluate_model(model, split: PrecompSplit, device, protocols: Sequence[str] = ("full",),
                   max_images: Optional[int] = None, batch_size: int = 128, shard: int = 128,
                   return_sims: bool = False, progress: bool = False):
    """Metrics of ``model`` on ``split`` under each protocol: ``{protocol: metrics}`` (and the sims);
    ``progress``: show a bar while the similarity matrix is filled."""
    img, cap, lens = encode_split(model, split, device, batch_size, max_images)
    sims = compute_sims(model, img, cap, lens, device, shard, progress)
    results = {p: evaluate_protocol(sims, p, split.captions_per_image) for p in protocols}
    return (results, sims) if return_sims else results


def default_protocols(dataset: Optional[str], split: str, n_images: int) -> List[str]:
    """coco + 5,000 images: 1K (5 folds) and 5K; f30k + 1,000 images: 1K; otherwise all at once."""
    name = (dataset or "").lower()
    if name.startswith("coco") and n_images == 5000:
        return ["coco1k", "coco5k"]
    if name.startswith(("f30k", "flickr30k")) and n_images == 1000:
        return ["f30k1k"]
    return ["full"]


# What a checkpoint must hold, by the type of each entry: to be evaluated, and to be resumed.
EVAL_KEYS = {"model": dict, "vocab": (list, tuple)}
RESUME_KEYS = {**EVAL_KEYS, "config": dict, "optimizer": dict, "epoch": int, "step": int, "global_step": int,
               "rng": dict, "best": dict, "history": list, "running": dict, "data": dict}


def read_checkpoint(path: str, keys: dict = EVAL_KEYS) -> dict:
    """The dict of a ``vsl-train`` checkpoint file, checked to hold ``keys`` (entry -> type) and a model
    spec (name, config, state_dict). Read with ``torch.load(weights_only=True)``: nothing in the file
    runs (:mod:`.checkpoint_io`). Raises FileNotFoundError, or ValueError naming the file for a
    truncated or corrupt file, a file of something else, a pickle that would run code
    (:class:`~.checkpoint_io.UnsafeCheckpoint`; a checkpoint of the earlier format names its conversion
    command), or a checkpoint that lacks what is needed."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = load_weights_only(path)
    except UnsafeCheckpoint:
        raise
    except Exception as exc:  # truncated/corrupt files raise various errors from zipfile/pickle
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vsl-train checkpoint")
    missing = [k for k, kind in keys.items() if not isinstance(ckpt.get(k), kind)]
    spec = ckpt.get("model")
    if isinstance(spec, dict) and not (isinstance(spec.get("name"), str) and isinstance(spec.get("config"), dict)
                                       and isinstance(spec.get("state_dict"), dict)):
        missing.append("model (name, config, state_dict)")
    if missing:
        raise ValueError(f"{path} is an incomplete vsl-train checkpoint (written by another version?): "
                         f"missing or malformed {', '.join(missing)}")
    return ckpt


def load_state(model, state_dict: dict, path: str) -> None:
    """``model.load_state_dict(state_dict)``; a state of another model raises ValueError naming ``path``."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[:2]
        raise ValueError(f"{path} holds the weights of another model than its {type(model).__name__} "
                         f"({' '.join(line.strip() for line in first)[:300]})") from None


def load_checkpoint(path: str, device="cpu"):
    """(model, vocab, checkpoint dict) from a ``vsl-train`` checkpoint (``checkpoint.pth``/``model_best.pth``).
    Raises FileNotFoundError, or ValueError naming the file (see :func:`read_checkpoint`; also a
    model spec that builds no model, or weights of another model)."""
    ckpt = read_checkpoint(path)
    spec = ckpt["model"]
    try:
        model = build_model(spec["name"], **spec["config"])
    except TypeError as exc:   # a config this version's model does not take
        raise ValueError(f"{path}: its {spec['name']} model config does not build here ({exc})") from None
    load_state(model, spec["state_dict"], path)
    model.to(device)
    model.eval()
    return model, vocabulary_from_checkpoint(ckpt), ckpt


def open_eval_split(data_dir: str, split: str, vocab, captions_per_image: int, model_name: str) -> PrecompSplit:
    """A split read with ``vocab``, with its segmentation inputs attached when ``model_name`` needs them."""
    data = PrecompSplit(data_dir, split, vocab, captions_per_image)
    if model_name in SEGMENTATION_MODELS:
        attach_segmentation(data)
    return data


def ensemble_sims(sims: Iterable[np.ndarray]) -> np.ndarray:
    """Element-wise mean of several (images x captions) similarity matrices, float32 (summed in float64
    one matrix at a time, so ``sims`` may be a generator that computes them one by one)."""
    total, count = None, 0
    for s in sims:
        if total is None:
            total = np.zeros(s.shape, dtype=np.float64)
        elif s.shape != total.shape:
            raise ValueError(f"the ensemble's similarity matrices differ in shape: {total.shape} and {s.shape}")
        total += s
        count += 1
    if total is None:
        raise ValueError("an ensemble needs at least one similarity matrix")
    return (total / count).astype(np.float32)


def check_semantic_options(args, n_images: int, captions_per_image: int) -> None:
    """Fail early (before any encoding) when ``--eccv`` or ``--caption-index`` cannot apply: ValueError
    naming what is expected, ImportError naming the package to install."""
    if args.eccv:
        if (n_images, n_images * captions_per_image) != COCO_5K_SHAPE:
            raise ValueError(f"--eccv scores the COCO 5K test set (5000 images x 25000 captions in SCAN's testall "
                             f"order), but this evaluation has {n_images} images x "
                             f"{n_images * captions_per_image} captions")
        coco_5k_test_ids()   # ImportError without eccv-caption; checks the package's SCAN order
    if args.caption_index:
        from ..caption_index import CaptionIndex
        args.loaded_caption_index = CaptionIndex.load(args.caption_index)
        if args.loaded_caption_index.num_images != n_images:
            raise ValueError(f"--caption-index {args.caption_index} indexes {args.loaded_caption_index.num_images} "
                             f"images, the evaluation has {n_images}: build it from the evaluated split's captions")


def semantic_reports(args, sims: np.ndarray, captions_per_image: int) -> dict:
    """The ``--eccv`` scores and, with ``--caption-index``, ASP and the rank agreement of S with the index's
    C (:func:`vsl_ext.metrics.average_semantic_precision`, :func:`vsl_ext.metrics.rank_agreement`);
    printed, and returned for the JSON summary."""
    out = {}
    if args.eccv:
        out["eccv"] = eccv_caption_metrics(sims)
        print(f"  eccv    {format_eccv_metrics(out['eccv'])}")
    index = getattr(args, "loaded_caption_index", None)
    if index is not None:
        semantic = index.image_similarity(torch.arange(index.num_images)).numpy()
        asp = average_semantic_precision(sims, semantic, captions_per_image)
        rho = rank_agreement(sims, semantic, captions_per_image)
        out["semantic"] = {"caption_index": args.caption_index, "mode": index.mode, "asp_i2t": asp["i2t"],
                           "asp_t2i": asp["t2i"], "rank_agreement": rho}
        print(f"  C ({index.mode}) ASP i2t/t2i {asp['i2t']:.1f}/{asp['t2i']:.1f}  "
              f"rank agreement of S with C (Spearman) {rho:.3f}")
    return out


def sims_path(path: str) -> str:
    """Where ``--save-sims PATH`` writes: PATH, with ``.npy`` appended as ``np.save`` does."""
    return path if path.endswith(".npy") else path + ".npy"


def output_paths(args) -> List[str]:
    """The files this vsl-eval writes (``--json``, ``--save-sims``): none is replaced without ``--overwrite``."""
    return ([args.json] if args.json else []) + ([sims_path(args.save_sims)] if args.save_sims else [])


def evaluate_saved_sims(args) -> int:
    """``vsl-eval --sims FILE.npy``: the metrics of a saved (images x captions) similarity matrix."""
    try:
        sims = np.load(args.sims, allow_pickle=False)
        cpi = args.captions_per_image or 5
        if sims.ndim != 2 or sims.shape[1] != sims.shape[0] * cpi:
            raise ValueError(f"{args.sims} holds a {sims.shape} array, not an (images x images * {cpi} captions) "
                             "similarity matrix")
        protocols = (default_protocols(args.dataset, "testall", sims.shape[0]) if args.protocol == "auto"
                     else args.protocol.split(","))
        check_semantic_options(args, sims.shape[0], cpi)
    except (OSError, ValueError, ImportError, RuntimeError) as exc:   # OSError: also FileNotFoundError
        print(f"vsl-eval: error: {exc}", file=sys.stderr)
        return 2
    results = {proto: evaluate_protocol(sims, proto, cpi) for proto in protocols}
    print(f"{args.sims} ({sims.shape[0]} images x {sims.shape[1]} captions)")
    for proto, m in results.items():
        print(f"  {proto:7s} {format_metrics(m)}")
    summary = {"sims": args.sims, "results": results, **semantic_reports(args, sims, cpi)}
    if args.json:
        atomic_write(args.json, json.dumps(summary, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="vsl-eval", description="Evaluate vsl-train checkpoints: R@1/5/10 both "
                                "directions, median ranks and rsum (SCAN/SGRAF protocol). Several checkpoints: "
                                "the ensemble of their averaged similarity matrices (SGRAF, 3SHNet).")
    p.add_argument("checkpoint", nargs="*", help="checkpoint.pth or model_best.pth written by vsl-train; several "
                   "form an ensemble")
    p.add_argument("--sims", default=None, help="evaluate this saved similarity matrix (.npy, e.g. from --save-sims) "
                   "instead of checkpoints")
    p.add_argument("--eccv", action="store_true", help="also ECCV Caption mAP@R/R-Precision/R@1, CxC R@K and COCO 5K "
                   "R@K (a COCO 5K evaluation; needs pip install \"vsl_ext[eccv]\")")
    p.add_argument("--caption-index", default=None, help="a saved CaptionIndex of the evaluated split's captions: "
                   "also ASP (DAA) and the rank agreement of S with its C")
    p.add_argument("--data", default=None, help="SCAN precomp folder (or its parent with --dataset)")
    p.add_argument("--dataset", default=None, help="dataset name (coco, f30k, ...): picks DATA/{name}_precomp "
                   "and the protocol; default: the one the (first) checkpoint was trained with")
    p.add_argument("--split", default=None, help="split to evaluate (default: testall for coco, else test)")
    p.add_argument("--protocol", default="auto", help="auto, full, coco1k, coco5k or f30k1k (comma-separated)")
    p.add_argument("--captions-per-image", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--shard", type=int, default=128, help="images/captions per similarity shard")
    p.add_argument("--save-sims", default=None, help="write the (ensemble's) similarity matrix to this .npy file")
    p.add_argument("--json", default=None, help="write the metrics to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json or --save-sims file")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch CPU threads (default {DEFAULT_THREADS}, the fastest on small or shared machines; "
                   "0: torch's default, one per core); the last digit of the metrics can depend on it")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = p.parse_args(argv)
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    existing = [path for path in output_paths(args) if os.path.exists(path)]
    if existing and not args.overwrite:
        print(f"vsl-eval: error: {', '.join(existing)} already exists: pass --overwrite to replace it, or pick "
              "another path", file=sys.stderr)
        return 2
    set_threads(args.threads)
    if args.sims is not None:
        if args.checkpoint:
            p.error("give checkpoints or --sims, not both")
        return evaluate_saved_sims(args)
    if not args.checkpoint or args.data is None:
        p.error("checkpoints and --data are required (or --sims FILE.npy)")
    try:
        device = pick_device(args.device)
        loaded = [load_checkpoint(path, device) for path in args.checkpoint]
        cfg = loaded[0][2].get("config", {})
        dataset = args.dataset or cfg.get("dataset")
        cpi = args.captions_per_image or cfg.get("captions_per_image", 5)
        data_dir = resolve_data_dir(args.data, dataset)
        split = args.split or ("testall" if (dataset or "").lower().startswith("coco")
                               and os.path.isfile(split_paths(data_dir, "testall")[1]) else "test")
        splits = []
        for path, (model, vocab, ckpt) in zip(args.checkpoint, loaded):
            data = open_eval_split(data_dir, split, vocab, cpi, ckpt["model"]["name"])
            if data.img_dim != model.config["img_dim"]:
                raise ValueError(f"{data.ims_path} has {data.img_dim}-dim features but the model of {path} expects "
                                 f"{model.config['img_dim']}")
            splits.append(data)
        protocols = (default_protocols(dataset, split, splits[0].num_images) if args.protocol == "auto"
                     else args.protocol.split(","))
        check_semantic_options(args, splits[0].num_images, cpi)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"vsl-eval: error: {exc}", file=sys.stderr)
        return 2
    per_model = []

    def each_model():
        for path, (model, _, ckpt), data in zip(args.checkpoint, loaded, splits):
            results, sims = evaluate_model(model, data, device, protocols, batch_size=args.batch_size,
                                           shard=args.shard, return_sims=True, progress=args.progress)
            print(f"{path} (epoch {ckpt.get('epoch')}, model {ckpt['model']['name']}) on {data}")
            for proto, m in results.items():
                print(f"  {proto:7s} {format_metrics(m)}")
            per_model.append({"checkpoint": path, "results": results})
            yield sims

    if len(args.checkpoint) == 1:
        sims = next(each_model())
        summary = {"checkpoint": args.checkpoint[0], "split": split, "results": per_model[0]["results"]}
    else:
        sims = ensemble_sims(each_model())
        results = {proto: evaluate_protocol(sims, proto, cpi) for proto in protocols}
        print(f"ensemble of {len(args.checkpoint)} (mean of the similarity matrices)")
        for proto, m in results.items():
            print(f"  {proto:7s} {format_metrics(m)}")
        summary = {"checkpoints": list(args.checkpoint), "split": split, "results": results, "models": per_model}
    summary.update(semantic_reports(args, sims, cpi))
    if args.save_sims:
        with atomic_open(sims_path(args.save_sims)) as f:
            np.save(f, sims)
    if args.json:
        atomic_write(args.json, json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
