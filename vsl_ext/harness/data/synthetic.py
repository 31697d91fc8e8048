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

Segmentation inputs (for ``3shnet``, in 3SHNet's file layout, see :mod:`.segmentation`): the
generator knows which object every region shows, so it also plays an imperfect panoptic segmenter.
The regions are laid out row by row on a square grid (4 x 4 for 16 regions); every cell belongs to a
class - the noun of the object its region shows ("things", ids 0-23) or the image's scene
("stuff", ids 24-29) - and gets per-class scores ``softmax(seg_confidence * onehot + seg_noise * N(0, 1))``
(the score maps, C x 4 x 4); the label map is the per-cell argmax upsampled ``seg_upsample`` times
(8 x 8), the class presence marks the classes in the label map. The segmentation therefore says which
class covers most of the image (the main object's) but nothing about colours or actions, and it
draws its noise from its own random stream: the features and captions are the same with or
without it.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..._atomic import atomic_open, atomic_write

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
    seg_confidence: float = 3.0                    # segmentation logit of a cell's true class
    seg_noise: float = 1.0                         # std of the segmentation logits' noise
    seg_upsample: int = 2                          # label-map pixels per region cell side


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
        regions, owner = [], []      # owner: 0 main object, k secondary object k, -1 background
        n_main = int(rng.integers(cfg.main_regions[0], cfg.main_regions[1] + 1))
        regions += [obj(main[i])] * n_main
        owner += [0] * n_main
        secondary = []
        for _ in range(int(rng.integers(cfg.secondary_objects[0], cfg.secondary_objects[1] + 1))):
            if rng.random() < cfg.copy_main_prob and n_images > 1:
                other = int(rng.integers(0, n_images - 1))
                content = main[other + (other >= i)]
            else:
                content = np.array([rng.integers(0, len(NOUNS)), rng.integers(0, len(COLOURS)),
                                    rng.integers(0, len(ACTIONS))])
            secondary.append([int(x) for x in content])
            n_sec = int(rng.integers(cfg.secondary_regions[0], cfg.secondary_regions[1] + 1))
            regions += [obj(content)] * n_sec
            owner += [len(secondary)] * n_sec
        regions, owner = regions[:R], owner[:R]
        owner += [-1] * (R - len(regions))
        regions += [protos["scene"][scene[i]]] * (R - len(regions))
        x = np.stack(regions) + rng.standard_normal((R, d)).astype(np.float32) * (cfg.noise / np.sqrt(d))
        perm = rng.permutation(R)
        feats[i] = x[perm]
        for t in rng.choice(len(TEMPLATES), cfg.captions_per_image, replace=len(TEMPLATES) < cfg.captions_per_image):
            captions.append(_caption(rng, TEMPLATES[t], main[i], cfg))
        meta.append({"main": [int(v) for v in main[i]], "main_regions": n_main, "secondary": secondary,
                     "scene": int(scene[i]), "region_objects": [owner[k] for k in perm]})
    return feats, captions, meta


def num_segmentation_classes(cfg: SyntheticConfig) -> int:
    """Segmentation classes of the synthetic data: the nouns ("things"), then the scenes ("stuff")."""
    return len(NOUNS) + cfg.scenes


def segmentation_inputs(meta: List[dict], cfg: SyntheticConfig, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """The segmentation arrays of a split from its ``meta`` (see the module doc).

    Returns ``{"score_maps": (n, C, g, g) float32, "label_map": (n, g*u, g*u) int64,
    "class_presence": (n, C) float32}`` with g = ceil(sqrt(regions)), u = ``seg_upsample``,
    C = :func:`num_segmentation_classes`; grid cells past the last region show the scene.
    """
    n, R, C = len(meta), cfg.regions, num_segmentation_classes(cfg)
    g = math.isqrt(R - 1) + 1
    cells = np.empty((n, g * g), dtype=np.int64)
    for i, m in enumerate(meta):
        objects = [m["main"][0]] + [sec[0] for sec in m["secondary"]]
        background = len(NOUNS) + m["scene"]
        cells[i] = [objects[o] if o >= 0 else background for o in m["region_objects"]] + [background] * (g * g - R)
    logits = cfg.seg_noise * rng.standard_normal((n, g * g, C))
    logits[np.arange(n)[:, None], np.arange(g * g)[None, :], cells] += cfg.seg_confidence
    scores = np.exp(logits - logits.max(2, keepdims=True))
    scores /= scores.sum(2, keepdims=True)
    labels = logits.argmax(2).reshape(n, g, g)
    presence = np.zeros((n, C), dtype=np.float32)
    np.put_along_axis(presence, labels.reshape(n, -1), 1.0, 1)
    u = cfg.seg_upsample
    return {"score_maps": scores.transpose(0, 2, 1).reshape(n, C, g, g).astype(np.float32),
            "label_map": labels.repeat(u, 1).repeat(u, 2).astype(np.int64), "class_presence": presence}


def generate(out_dir: Optional[str] = None, config: SyntheticConfig = SyntheticConfig()) -> Dict[str, tuple]:
    """Build train/dev/test splits; write them in SCAN format to ``out_dir`` when given.

    Returns ``{split: (features, captions, meta)}``. Files: ``{split}_ims.npy``, ``{split}_caps.txt``,
    ``{split}_meta.json`` (content labels, for analysis), the segmentation inputs
    ``{split}_segmentations.npy``, ``{split}_seg_maps.npy``, ``{split}_cat_onehots.npy``
    (:func:`segmentation_inputs`) and ``synthetic_config.json``.
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
            with atomic_open(os.path.join(out_dir, f"{split}_ims.npy")) as f:
                np.save(f, feats)
            atomic_write(os.path.join(out_dir, f"{split}_caps.txt"), "\n".join(caps) + "\n")
            atomic_write(os.path.join(out_dir, f"{split}_meta.json"), json.dumps(meta))
        write_segmentation(out_dir, {split: meta for split, (_, _, meta) in splits.items()}, config)
        atomic_write(os.path.join(out_dir, "synthetic_config.json"), json.dumps(asdict(config), indent=1))
    return splits


def write_segmentation(out_dir: str, metas: Dict[str, List[dict]], config: SyntheticConfig) -> None:
    """Writes every split's segmentation inputs under 3SHNet's file names (each file atomically); the
    noise of split k comes from the stream (config.seed, k, 0x5E6)."""
    from .segmentation import segmentation_paths

    for k, (split, meta) in enumerate(metas.items()):
        arrays = segmentation_inputs(meta, config, np.random.default_rng([config.seed, k, 0x5E6]))
        for key, path in segmentation_paths(out_dir, split).items():
            with atomic_open(path) as f:
                np.save(f, arrays[key])


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
    # holds[j, i]: image j has image i's main content as a secondary object
    holds = np.zeros((n, n), dtype=bool)
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
