"""Variants of ``vsl-train --demo``: the options that may change the demo's recipe in both arms.

    vsl-train --demo --model ssamt                        # SSAMT in both arms
    vsl-train --demo --semantic phrases --phrase-level    # vse + phrase-level losses, VSL on phrase labels
    vsl-train --demo --model 3shnet                       # 3SHNet and vse side by side

Only :data:`DEMO_OPTIONS` pass through; both arms (triplet baseline and triplet + VSL) get the same
variant settings, so the arms still differ only in the VSL term.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

DEMO_OPTIONS = ("model", "semantic", "phrase_level", "phrase_weight")
# per-model recipe changes of the demo (small sizes for 2 CPU cores)
MODEL_RECIPES: Dict[str, dict] = {
    # transformer: the GRU recipe's 0.4 dropout is too strong; it converges in about 5 epochs at lr 3e-4
    # (validation rsum flat from epoch 5 in a trial run), so 8 epochs with the decay after 5
    "ssamt": {"dropout": 0.1, "num_layers": 1, "epochs": 8, "lr_update": 5},
    # 3SHNet's warm-up: the first epoch's triplet sums over all negatives (its --vse_mean_warmup_epochs 1)
    "3shnet": {"max_violation_warmup": 1},
}
DEMO_MODELS = ("vse", "ssamt", "3shnet")
# models whose demo also trains the plain vse arms and reports both side by side (.demo_shnet)
COMPARED_WITH_VSE = ("3shnet",)


def demo_overrides(args) -> Dict[str, object]:
    """The :data:`DEMO_OPTIONS` given on the command line (parsed ``vsl-train`` arguments)."""
    return {k: getattr(args, k) for k in DEMO_OPTIONS if getattr(args, k, None) is not None}


def default_output(overrides: Optional[dict]) -> str:
    """The demo's run folder name: ``demo``, plus what the variant changes, so that no variant writes
    into another's folder: ``demo_ssamt``, ``demo_3shnet``, ``demo_phrases_phrase-level``, ..."""
    overrides = overrides or {}
    parts = ["demo"]
    if overrides.get("model", "vse") != "vse":
        parts.append(str(overrides["model"]))
    if overrides.get("semantic", "tfidf") != "tfidf":
        parts.append(str(overrides["semantic"]))
    if overrides.get("phrase_level"):
        parts.append("phrase-level")
    if "phrase_weight" in overrides:
        parts.append(f"pw{overrides['phrase_weight']:g}")
    return "_".join(parts)


def apply_overrides(cfg, overrides: Optional[dict]):
    """``cfg`` with the model's recipe and the overrides applied (ValueError for other options)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEMO_OPTIONS))
    if unknown:
        raise ValueError(f"the demo accepts only {DEMO_OPTIONS} as recipe changes, got {unknown}")
    model = overrides.get("model", cfg.model)
    if model not in DEMO_MODELS:
        raise ValueError(f"the demo trains --model {' or '.join(DEMO_MODELS)}, got {model!r}")
    return dataclasses.replace(cfg, **{**MODEL_RECIPES.get(model, {}), **overrides})


def arm_labels(cfg) -> Tuple[str, str]:
    """Column names of the two arms, e.g. ``("triplet + 1 phrase (baseline)", "triplet + 1 phrase + 10 VSL")``."""
    base = "triplet" + (f" + {cfg.phrase_weight:g} phrase" if cfg.phrase_level else "")
    return f"{base} (baseline)", f"{base} + {cfg.beta:g} VSL"


def describe(cfg) -> str:
    """What the variant changes, e.g. ``"model ssamt"`` ('' for the plain demo)."""
    parts = []
    if cfg.model != "vse":
        parts.append(f"model {cfg.model}")
    if cfg.phrase_level:
        parts.append(f"phrase-level losses (weight {cfg.phrase_weight:g})")
    if cfg.semantic != "tfidf":
        parts.append(f"VSL on {cfg.semantic} similarity")
    return ", ".join(parts)


def header_note(cfg) -> str:
    """One line above the table saying what both arms share and what differs."""
    shared = [p for p in (f"model {cfg.model}" if cfg.model != "vse" else "",
                          f"phrase-level losses (weight {cfg.phrase_weight:g})" if cfg.phrase_level else "") if p]
    both = f"both arms: {', '.join(shared)}; " if shared else ""
    return f"{both}the arms differ only in the VSL term (beta {cfg.beta:g}, semantic similarity {cfg.semantic})."
