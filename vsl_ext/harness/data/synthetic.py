"""Synthetic SCAN-format data reproducing the failure case of the VSL paper's Fig. 1.

Every image shows one MAIN object, drawn over many region features, and 2-3 SECONDARY objects,
each drawn over only 1-2 regions; the remaining regions are background. An object is a
(class, colour, action) triple and each of its regions carries the sum of the three prototype
vectors plus noise. The image's 5 captions (5 of 8 templates, with the colour or the action
sometimes left out, as human annotators do) describe the MAIN object only. Half of the secondary
objects copy the main content of another image of the same split, so for most captions there are
wrong images that *contain* the described object, just as a small secondary object - the situation
in which an image whose secondary content matches a caption can outrank the true image.

All parameters are fixed a priori from that description (``SyntheticConfig``); the dataset depends
only on ``config.seed``, not on the training seed.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

NOUNS = ("dog", "cat", "horse", "bird", "car", "bus", "boat", "bicycle", "man", "woman", "child", "train",
         "plane", "cow", "sheep", "elephant", "bear", "zebra", "giraffe", "truck", "motorcycle", "kite",
         "umbrella", "ball")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "brown", "orange")
ACTIONS = ("standing still", "moving quickly", "turning around", "resting in the shade", "waiting patiently",
           "leaning to one side")
TEMPLATES = ("a {c}{n}{a}", "there is a {c}{n}{a} in this picture", "a photo of a {c}{n}{a}",
             "close up of a {c}{n}{a}", "an image showing a {c}{n}{a}", "this is a {c}{n}{a}",
             "one {c}{n}{a} is shown", "the {c}{n}{a} in the middle of the scene")


@dataclass(frozen=True)
class SyntheticConfig:
    train_images: int = 1000
    dev_images: int = 200
    test_images: int = 1000
    captions_per_image: int = 5
    regions: int = 16
    feat_dim: int = 64
    scenes: int = 6
    main_regions: Tuple[int, int] = (6, 9)         # inclusive range of regions showing the main object
    secondary_objects: Tuple[int, int] = (2, 3)
    secondary_regions: Tuple[int, int] = (1, 2)
    copy_main_prob: float = 0.5                    # a secondary object repeats another image's main content
    noise: float = 1.0                             # per-region noise norm (prototypes have norm 1)
    drop_colour_prob: float = 0.2
    drop_action_prob: float = 0.2
    seed: int = 1234


def _prototypes(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    p = rng.standard_normal((n, d))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def _caption(rng: np.random.Generator, template: str, content, cfg: SyntheticConfig) -> str:
    cls, col, act = content
    c = "" if rng.random() < cfg.drop_colour_prob else COLOURS[col] + " "
    a = "" if rng.random() < cfg.drop_action_prob else " " + ACTIONS[act]
    text = template.format(c=c, n=NOUNS[cls], a=a)
    return re.sub(r"\ba ([aeiou])", r"an \1", text)


def make_split(n_images: int, cfg: SyntheticConfig, protos: Dict[str, np.ndarray], rng: np.random.Generator):
    """Features (n, regions, dim) float32, captions (n * cpi lines) and per-image content labels."""
    R, d = cfg.regions, cfg.feat_dim
    main = np.stack([rng.integers(0, len(NOUNS), n_images), rng.integers(0, len(COLOURS), n_images),
                     rng.integers(0, len(ACTIONS), n_images)], axis=1)
    scene = rng.integers(0, cfg.scenes, n_images)
    feats = np.empty((n_images, R, d), dtype=np.float32)
    captions: List[str] = []
    meta = []

    def obj(content):
        return protos["class"][content[0]] + protos["colour"][content[1]] + protos["action"][content[2]]

    for i in range(n_images):
        regions = []
        n_main = int(rng.integers(cfg.main_regions[0], cfg.main_regions[1] + 1))
        regions += [obj(main[i])] * n_main
        secondary = []
        for _ in range(int(rng.integers(cfg.secondary_objects[0], cfg.secondary_objects[1] + 1))):
            if rng.random() < cfg.copy_main_prob and n_images > 1:
                other = int(rng.integers(0, n_images - 1))
                content = main[other + (other >= i)]
            else:
                content = np.array([rng.integers(0, len(NOUNS)), rng.integers(0, len(COLOURS)),
                                    rng.integers(0, len(ACTIONS))])
            secondary.append([int(x) for x in content])
            regions += [obj(content)] * int(rng.integers(cfg.secondary_regions[0], cfg.secondary_regions[1] + 1))
        regions = regions[:R]
        regions += [protos["scene"][scene[i]]] * (R - len(regions))
        x = np.stack(regions) + rng.standard_normal((R, d)).astype(np.float32) * (cfg.noise / np.sqrt(d))
        feats[i] = x[rng.permutation(R)]
        for t in rng.choice(len(TEMPLATES), cfg.captions_per_image, replace=len(TEMPLATES) < cfg.captions_per_image):
            captions.append(_caption(rng, TEMPLATES[t], main[i], cfg))
        meta.append({"main": [int(v) for v in main[i]], "main_regions": n_main, "secondary": secondary,
                     "scene": int(scene[i])})
    return feats, captions, meta


def generate(out_dir: Optional[str] = None, config: SyntheticConfig = SyntheticConfig()) -> Dict[str, tuple]:
    """Build train/dev/test splits; write them in SCAN format to ``out_dir`` when given.

    Returns ``{split: (features, captions, meta)}``. Files: ``{split}_ims.npy``, ``{split}_caps.txt``,
    ``{split}_meta.json`` (content labels, for analysis) and ``synthetic_config.json``.
    """
    rng = np.random.default_rng(config.seed)
    d = config.feat_dim
    protos = {"class": _prototypes(rng, len(NOUNS), d), "colour": _prototypes(rng, len(COLOURS), d),
              "action": _prototypes(rng, len(ACTIONS), d), "scene": _prototypes(rng, config.scenes, d)}
    splits = {}
    for split, n in (("train", config.train_images), ("dev", config.dev_images), ("test", config.test_images)):
        splits[split] = make_split(n, config, protos, rng)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        for split, (feats, caps, meta) in splits.items():
            np.save(os.path.join(out_dir, f"{split}_ims.npy"), feats)
            with open(os.path.join(out_dir, f"{split}_caps.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(caps) + "\n")
            with open(os.path.join(out_dir, f"{split}_meta.json"), "w", encoding="utf-8") as f:
                json.dump(meta, f)
        with open(os.path.join(out_dir, "synthetic_config.json"), "w", encoding="utf-8") as f:
            json.dump(asdict(config), f, indent=1)
    return splits


def _row_ranks(m: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank) of every row, 0-based."""
    order = np.argsort(m, axis=1, kind="stable")
    out = np.empty_like(m, dtype=np.float64)
    for r in range(m.shape[0]):
        v = m[r, order[r]]
        starts = np.r_[0, np.flatnonzero(np.diff(v)) + 1]
        ends = np.r_[starts[1:], len(v)]
        avg = np.repeat((starts + ends - 1) / 2.0, ends - starts)
        out[r, order[r]] = avg
    return out


def failure_analysis(sims: np.ndarray, meta: List[dict], captions: List[str], semantic: np.ndarray) -> Dict[str, float]:
    """What the retrieval errors on a synthetic split are made of.

    Args:
        sims: (N, 5N) model similarities on the split (images x captions).
        meta, captions: the split's content labels and captions (``generate`` output).
        semantic: (N, N) caption-based image similarity C of the split (e.g. CaptionIndex).

    Returns percentages over the split's captions of t2i top-1 images that are
    ``consistent`` (their main object matches everything the caption says: class, and colour/action
    when mentioned - the correct image or an indistinguishable one) or ``secondary_match`` errors
    (an inconsistent image holding the caption's object as a SECONDARY object: the Fig. 1 failure),
    ``oracle_t2i_r1``: the t2i R@1 of picking uniformly among the consistent images (the ceiling
    that the captions' ambiguity allows), and ``rank_agreement``: mean Spearman correlation between
    each image's row of S (averaged over each image's captions) and its row of C.
    """
    n = len(meta)
    cpi = len(captions) // n
    main = np.array([m["main"] for m in meta])
    consistent = np.zeros((n * cpi, n), dtype=bool)
    for c_id, text in enumerate(captions):
        i = c_id // cpi
        words = text.split()
        ok = main[:, 0] == main[i, 0]
        if COLOURS[main[i, 1]] in words:
            ok &= main[:, 1] == main[i, 1]
        if ACTIONS[main[i, 2]] in text:
            ok &= main[:, 2] == main[i, 2]
        consistent[c_id] = ok
    holds = np.zeros((n, n), dtype=bool)           # holds[j, i]: image j has image i's main content as a secondary object
    for j, m in enumerate(meta):
        for s in m["secondary"]:
            holds[j] |= (main == np.asarray(s)).all(1)
    truth = np.arange(n * cpi) // cpi
    top = np.asarray(sims).argmax(0)
    cons = consistent[np.arange(n * cpi), top]
    secondary = holds[top, truth] & ~cons
    s_img = np.asarray(sims, dtype=np.float64).reshape(n, n, cpi).mean(2)
    ra, rc = _row_ranks(s_img), _row_ranks(np.asarray(semantic, dtype=np.float64))
    ra -= ra.mean(1, keepdims=True)
    rc -= rc.mean(1, keepdims=True)
    rho = (ra * rc).sum(1) / np.sqrt((ra ** 2).sum(1) * (rc ** 2).sum(1) + 1e-300)
    return {"consistent": 100.0 * float(cons.mean()), "secondary_match": 100.0 * float(secondary.mean()),
            "oracle_t2i_r1": 100.0 * float(np.mean(1.0 / consistent.sum(1))), "rank_agreement": float(rho.mean())}
