"""``TrainConfig``: every setting of a training run, and the ``vsl-train`` options derived from it.

Each field that the command line sets carries its option in ``metadata["cli"]`` (group, help, and
for booleans the switch that flips the default), so the parser and the conversion back to a config
are generated from this one list.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from typing import Optional

from .models import MODELS

SEMANTICS = ("tfidf", "cider-d", "phrases")
VARIANTS = ("row", "public-code")
# options that may differ between the interrupted run and the --resume call (threads and device, which
# change the numbers: the run's own unless given)
RESUME_MUTABLE = ("device", "progress", "tensorboard", "epochs", "output", "resume", "threads", "checkpoint_every",
                  "overwrite", "global_batch")


def _cli(default, group: str, help: Optional[str] = None, *, switch: Optional[str] = None, choices=None,
         type=None, show_default: bool = True):
    """A config field set by a ``vsl-train`` option (booleans: ``switch`` flips the default)."""
    return field(default=default, metadata={"cli": dict(group=group, help=help, switch=switch, choices=choices,
                                                        type=type, show_default=show_default)})


@dataclass
class TrainConfig:
    data: Optional[str] = _cli(None, "data", "SCAN precomp folder ({split}_ims.npy + {split}_caps.txt), or its "
                               "parent holding {dataset}_precomp/", type=str)
    dataset: Optional[str] = _cli(None, "data", "dataset name (coco, f30k, ...): folder lookup and evaluation "
                                  "protocol", type=str)
    model: str = _cli("vse", "model", choices=MODELS)
    # loss
    vsl: bool = _cli(True, "loss", "triplet loss only (the baseline)", switch="--no-vsl")
    alpha: float = _cli(1.0, "loss", "triplet weight")
    beta: float = _cli(10.0, "loss", "VSL weight")
    margin: float = _cli(0.2, "loss")
    max_violation: bool = _cli(True, "loss", "sum over all negatives instead of the hardest",
                               switch="--no-max-violation")
    max_violation_warmup: int = _cli(0, "loss", "first N epochs sum over all negatives, the hardest after "
                                     "(VSE-infinity's and 3SHNet's warm-up: 1)")
    tau: float = _cli(1e-3, "loss")
    text_side: bool = _cli(False, "loss", "add the text-side loss L_ts (Eq. 7)", switch="--text-side")
    variant: str = _cli("row", "loss", choices=VARIANTS)
    semantic: str = _cli("tfidf", "loss", "caption similarity behind the semantic ranks (phrases: scene-graph "
                         "labels, needs spaCy, see docs/phrases.md)", choices=SEMANTICS)
    phrase_level: bool = _cli(False, "loss", "add the SSAMT phrase-level losses (vse, ssamt; see docs/ssamt.md)",
                              switch="--phrase-level")
    phrase_weight: float = _cli(0.1, "loss", "weight of the phrase-level losses (docs/ssamt.md says why 0.1)")
    # model
    embed_size: int = _cli(1024, "model")
    word_dim: int = _cli(300, "model")
    num_layers: int = _cli(1, "model")
    sim_dim: int = _cli(256, "model", "sgr/saf similarity vector size")
    sgr_step: int = _cli(3, "model")
    pooling: str = _cli("mean", "model", "vse pooling", choices=("mean", "gpo"))
    dropout: float = _cli(0.4, "model")
    text_encoder: str = _cli("bigru", "model", "3shnet caption encoder: BiGRU, or BERT from --bert-path",
                             choices=("bigru", "bert"))
    bert_path: Optional[str] = _cli(None, "model", "local BERT checkpoint folder (config.json, weights, vocab.txt) "
                                    "for --text-encoder bert; nothing is downloaded", type=str)
    spatial_dim: int = _cli(128, "model", "3shnet spatial-fusion key channels")
    region_drop: float = _cli(0.2, "model", "3shnet: probability of dropping a region in training")
    # data
    captions_per_image: int = _cli(5, "data")
    vocab: Optional[str] = _cli(None, "data", "SCAN vocab json to use instead of building one from the training "
                                "captions", type=str)
    vocab_min_count: int = _cli(1, "data")
    train_split: str = "train"
    val_split: str = _cli("dev", "data")
    test_split: Optional[str] = _cli("auto", "data", "split tested with the best model after training ('auto': "
                                     "testall for coco, else test, if present; 'none' to skip)", type=str)
    val_images: int = _cli(0, "data", "validate on the first N images (0: all; coco default 1000)")
    # optimisation
    batch_size: int = _cli(128, "optimisation")
    epochs: int = _cli(20, "optimisation", "with --resume: the run's own unless given")
    lr: float = _cli(3e-4, "optimisation")
    lr_update: int = _cli(10, "optimisation", "multiply lr by --lr-decay every N epochs")
    lr_decay: float = _cli(0.1, "optimisation")
    grad_clip: float = _cli(2.0, "optimisation")
    seed: int = _cli(0, "optimisation")
    # runtime
    output: str = _cli("runs/vsl", "runtime", "run folder (default runs/<dataset>_<model>[_novsl])",
                       show_default=False)
    device: Optional[str] = _cli(None, "runtime", "auto, cpu, cuda, cuda:1, ... (default auto; --resume keeps the "
                                 "run's own unless given: results depend on the device)", type=str)
    threads: Optional[int] = _cli(None, "runtime", "torch CPU threads (default 1, the fastest for the harness's "
                                  "small models on small or shared machines; 0: torch's default, one per core); "
                                  "results depend on it, so --resume keeps the run's own unless given", type=int)
    progress: bool = _cli(True, "runtime", "no tqdm progress bars", switch="--no-progress")
    tensorboard: bool = _cli(True, "runtime", switch="--no-tensorboard")
    checkpoint_every: int = _cli(0, "runtime", "also checkpoint every N steps (0: at epoch ends only)")
    global_batch: bool = _cli(False, "runtime", "under torchrun: one exact global batch of --batch-size pairs "
                              "sharded over the ranks (vse model; see vsl_ext.harness.global_batch)",
                              switch="--global-batch")
    resume: bool = _cli(False, "runtime", "continue the run in --output from its checkpoint", switch="--resume")
    overwrite: bool = _cli(False, "runtime", "start a new run even if --output holds one (--demo: replace an "
                           "earlier demo there)", switch="--overwrite")


def _cli_fields():
    return [f for f in fields(TrainConfig) if "cli" in f.metadata]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per CLI field of :class:`TrainConfig`, in argument groups; every option's parsed
    default is None ("not given"), so :func:`config_from_args` can tell what the user set."""
    groups = {}
    for f in _cli_fields():
        spec = f.metadata["cli"]
        group = groups.get(spec["group"]) or groups.setdefault(spec["group"], parser.add_argument_group(spec["group"]))
        if isinstance(f.default, bool):
            group.add_argument(spec["switch"], dest=f.name, action="store_const", const=not f.default,
                               default=None, help=spec["help"])
            continue
        shown = f" (default {f.default})" if f.default is not None and spec["show_default"] else ""
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, choices=spec["choices"],
                           type=spec["type"] or type(f.default), help=(spec["help"] or "").strip() + shown or None)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config that the parsed options describe (fields not given keep their defaults).

    ``--output`` defaults to ``runs/<dataset>_<model>[_novsl]``; ``--epochs`` not given on a
    ``--resume`` is 0, meaning "the run's own"; ``--test-split none`` is no test split."""
    given = {f.name: getattr(args, f.name) for f in _cli_fields() if getattr(args, f.name) is not None}
    if "output" not in given:
        name = given.get("dataset") or (os.path.basename(os.path.normpath(given["data"])) if "data" in given else "run")
        given["output"] = os.path.join("runs", f"{name}_{given.get('model', 'vse')}"
                                               f"{'_novsl' if given.get('vsl') is False else ''}")
    if "epochs" not in given and given.get("resume"):
        given["epochs"] = 0
    if "test_split" in given and str(given["test_split"]).lower() == "none":
        given["test_split"] = None
    return TrainConfig(**given)

