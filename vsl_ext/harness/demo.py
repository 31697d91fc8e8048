"""``vsl-train --demo``: synthetic data built after the paper's Fig. 1, triplet vs triplet + VSL.

Generates the data (:mod:`vsl_ext.harness.data.synthetic`), trains both arms for every seed, prints
a side-by-side R@K table and a diagnostics table, and writes ``results.{md,png,json}``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .._atomic import atomic_write
from ..metrics import format_metrics
from .config import TrainConfig
from .demo_variants import COMPARED_WITH_VSE, apply_overrides, arm_labels, describe, header_note
from .trainer import Trainer, caption_index_class

DEMO_METRICS = (("i2t_r1", "i2t R@1"), ("i2t_r5", "i2t R@5"), ("i2t_r10", "i2t R@10"),
                ("t2i_r1", "t2i R@1"), ("t2i_r5", "t2i R@5"), ("t2i_r10", "t2i R@10"), ("rsum", "rsum"))


def demo_config(data: str, output: str, seed: int, vsl: bool, epochs: Optional[int] = None, device: str = "auto",
                progress: bool = True, threads: int = 1, overrides: Optional[dict] = None) -> TrainConfig:
    """The demo's fixed recipe: ``vse`` (128-d joint space, mean pooling), batch 128, Adam 3e-4 for
    10 epochs then 3e-5, 15 epochs, triplet (margin 0.2, hardest negatives) [+ 10 * VSL, tau 1e-3,
    TF-IDF semantic similarity]. Only ``vsl`` differs between the two arms. ``overrides``: a
    variant's changes to the recipe, the same in both arms (:mod:`.demo_variants`)."""
    cfg = apply_overrides(TrainConfig(data=data, dataset="synthetic", output=output, model="vse", vsl=vsl,
                                      embed_size=128, word_dim=64, batch_size=128, epochs=15, lr=3e-4,
                                      lr_update=10, seed=seed, device=device, progress=progress, tensorboard=False,
                                      test_split="test", threads=threads, overwrite=True), overrides)
    return dataclasses.replace(cfg, epochs=epochs) if epochs else cfg


def _mean_std(values: Sequence[float]):
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def demo_table(results: Dict[str, List[dict]], seeds: Sequence[int],
               labels: Sequence[str] = ("triplet (baseline)", "triplet + 10 VSL")) -> str:
    """Markdown table: mean +- sample std over seeds for baseline and VSL, their difference and how
    many seeds VSL wins; ``labels`` name the two arms."""
    lines = [f"| metric (test, {len(seeds)} seeds) | {labels[0]} | {labels[1]} | difference | VSL better in |",
             "|---|---|---|---|---|"]
    for key, label in DEMO_METRICS:
        b = [r[key] for r in results["baseline"]]
        v = [r[key] for r in results["vsl"]]
        (bm, bs), (vm, vs) = _mean_std(b), _mean_std(v)
        wins = sum(x > y for x, y in zip(v, b))
        lines.append(f"| {label} | {bm:.1f} ± {bs:.1f} | {vm:.1f} ± {vs:.1f} | {vm - bm:+.1f} "
                     f"| {wins}/{len(seeds)} seeds |")
    return "\n".join(lines)


def demo_diagnostics(diagnostics: Dict[str, List[dict]],
                     labels: Sequence[str] = ("triplet (baseline)", "triplet + 10 VSL")) -> str:
    """Markdown table of :func:`vsl_ext.harness.data.synthetic.failure_analysis`, mean over seeds."""
    def mean(arm, key):
        return float(np.mean([d[key] for d in diagnostics[arm]]))
    rows = [("t2i top-1 image consistent with the caption (%)", "consistent", "{:.1f}"),
            ("t2i top-1 errors of the Fig.-1 kind: object only secondary there (%)", "secondary_match", "{:.1f}"),
            ("rank agreement of S with the caption similarity C (Spearman)", "rank_agreement", "{:.3f}")]
    lines = [f"| diagnostic | {labels[0]} | {labels[1]} |", "|---|---|---|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(mean('baseline', key))} | {fmt.format(mean('vsl', key))} |")
    oracle = mean("baseline", "oracle_t2i_r1")
    lines.append(f"| t2i R@1 ceiling: random pick among caption-consistent images (%) | {oracle:.1f} | {oracle:.1f} |")
    return "\n".join(lines)


def demo_figure(results: Dict[str, List[dict]],
                labels: Sequence[str] = ("triplet (baseline)", "triplet + 10 VSL"), model: str = "vse"):
    """The demo's grouped bar chart as a matplotlib Figure: one bar colour per arm (legend: the arms'
    ``labels``), one group per metric (R@1/5/10, both directions), bar = mean over seeds, error bar =
    sample std. Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, _ in DEMO_METRICS if k != "rsum"]
    metric_names = [name for k, name in DEMO_METRICS if k != "rsum"]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    for off, arm, arm_label in ((-0.2, "baseline", labels[0]), (0.2, "vsl", labels[1])):
        stats = [_mean_std([r[k] for r in results[arm]]) for k in keys]
        bars = ax.bar(x + off, [m for m, _ in stats], 0.4, yerr=[s for _, s in stats], capsize=3, label=arm_label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=4)
    ax.set_xticks(x)
    ax.set_xticklabels(metric_names)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 109)
    n = len(results["vsl"])
    ax.set_title(f"Synthetic Fig.-1 data, {model}, test set, mean ± std over {n} seed{'s' if n != 1 else ''}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    return fig


def save_figure(fig, path: str) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from .._atomic import atomic_open
    try:
        with atomic_open(path) as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)


def demo_chart(results: Dict[str, List[dict]], path: str,
               labels: Sequence[str] = ("triplet (baseline)", "triplet + 10 VSL"), model: str = "vse") -> bool:
    """Write :func:`demo_figure` to ``path`` (PNG); False when matplotlib is missing."""
    try:
        fig = demo_figure(results, labels, model)
    except ImportError:
        return False
    save_figure(fig, path)
    return True


def run_environment(threads: int) -> dict:
    """What a demo's numbers depend on besides its recipe and seeds: the torch CPU thread count
    (float sums are reduced in a different order with more threads) and the versions of torch and
    numpy; with the same values the demo prints the same numbers."""
    import platform

    import torch

    from .._version import __version__
    return {"threads": int(threads), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "vsl_ext": __version__}


_ARM_FOLDER = re.compile(r"^(?:[a-z0-9]+_)?(?:baseline|vsl)_seed\d+$")
_RESULT_FILES = ("results.md", "results.json", "results.png")


def demo_entries(output: str) -> List[str]:
    """The entries of ``output`` that a demo writes (``data``, the arms' run folders, ``results.*``)."""
    if not os.path.isdir(output):
        return []
    return sorted(name for name in os.listdir(output)
                  if name in _RESULT_FILES or (name == "data" and os.path.isdir(os.path.join(output, name)))
                  or (_ARM_FOLDER.match(name) and os.path.isdir(os.path.join(output, name))))


def claim_output(output: str, overwrite: bool) -> None:
    """Make ``output`` ready for a new demo. An earlier demo there (any entry of :func:`demo_entries`)
    raises FileExistsError unless ``overwrite``, which removes those entries (and nothing else), so no
    seed folder or result of the old run survives beside the new one."""
    found = demo_entries(output)
    if found and not overwrite:
        listed = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise FileExistsError(f"{output} holds an earlier demo ({listed}): pass --overwrite to replace it, or pick "
                              f"another --output")
    for name in found:
        path = os.path.join(output, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    os.makedirs(output, exist_ok=True)


def _quiet(msg: str) -> None:
    """The log function of the arms' trainers: drops every line."""


def run_demo(output: str = os.path.join("runs", "demo"), seeds: Sequence[int] = (0, 1, 2), epochs: Optional[int] = None,
             device: str = "auto", progress: bool = True, log: Callable[[str], None] = print,
             index_factory: Optional[Callable] = None, threads: int = 1, overrides: Optional[dict] = None,
             overwrite: bool = False) -> dict:
    """``vsl-train --demo``: generate the synthetic data, train the two arms for every seed, write
    ``results.md``, ``results.png`` and ``results.json`` to ``output`` and print the table.
    ``overrides``: a variant's recipe changes for both arms (:mod:`.demo_variants`). An earlier demo
    in ``output`` raises FileExistsError unless ``overwrite`` (:func:`claim_output`).

    ``threads`` defaults to 1: the demo's small matrices gain nothing from more threads, and torch's
    OpenMP threads slow down badly when the cores are shared with other processes."""
    from .data.synthetic import SyntheticConfig, failure_analysis, generate

    t_start = time.perf_counter()
    data = os.path.join(output, "data")
    variant_kw = {"overrides": overrides} if overrides else {}
    cfg = demo_config(data, output, 0, True, epochs, **variant_kw)   # the variant, for labels and C
    labels = arm_labels(cfg)
    syn = SyntheticConfig()
    claim_output(output, overwrite)
    splits = generate(data, syn)
    log(f"synthetic data in {data}: {syn.train_images}/{syn.dev_images}/{syn.test_images} images, "
        f"{syn.regions} regions x {syn.feat_dim}, main object on {syn.main_regions[0]}-{syn.main_regions[1]} regions, "
        f"{syn.secondary_objects[0]}-{syn.secondary_objects[1]} secondary objects on "
        f"{syn.secondary_regions[0]}-{syn.secondary_regions[1]} regions, captions describe the main object only")
    results: Dict[str, List[dict]] = {"baseline": [], "vsl": []}
    diagnostics: Dict[str, List[dict]] = {"baseline": [], "vsl": []}
    test_feats, test_caps, test_meta = splits["test"]
    groups = [test_caps[i * syn.captions_per_image:(i + 1) * syn.captions_per_image] for i in range(len(test_meta))]
    if describe(cfg):
        log(f"variant: {header_note(cfg)}")
    make_index = index_factory or caption_index_class().from_captions
    sem_extra = ({"phrase_cache": os.path.join(data, "test_caps.phrases")} if cfg.semantic == "phrases" else {})
    test_sem = make_index(groups, mode=cfg.semantic, **sem_extra).image_similarity(np.arange(len(test_meta)))
    test_sem = test_sem.cpu().numpy()

    compared = ("vse", cfg.model) if cfg.model in COMPARED_WITH_VSE else (cfg.model,)
    if len(compared) > 1:   # imported now, not after an hour of training (code edited meanwhile must not break it)
        from .demo_shnet import report
    by_model = {m: ({"baseline": [], "vsl": []}, {"baseline": [], "vsl": []}) for m in compared}
    by_model[cfg.model] = (results, diagnostics)
    for seed in seeds:
        for name in compared:
            # the comparison rows: the plain vse recipe with the variant's other changes
            arm_overrides = overrides if name == cfg.model else {k: v for k, v in (overrides or {}).items()
                                                                 if k != "model"}
            for arm in ("baseline", "vsl"):
                folder = f"{arm}_seed{seed}" if len(compared) == 1 else f"{name}_{arm}_seed{seed}"
                arm_cfg = demo_config(data, os.path.join(output, folder), seed, arm == "vsl", epochs, device,
                                      progress, threads, **({"overrides": arm_overrides} if arm_overrides else {}))
                t0 = time.perf_counter()
                trainer = Trainer(arm_cfg, _quiet, index_factory)
                summary = trainer.run()
                test = summary["test"]["full"]
                by_model[name][0][arm].append(test)
                by_model[name][1][arm].append(failure_analysis(trainer.test_sims, test_meta, test_caps, test_sem))
                label = arm if len(compared) == 1 else f"{name} {arm}"
                log(f"seed {seed} {label:8s} ({time.perf_counter() - t0:5.1f} s, best epoch {summary['best_epoch']}): "
                    f"{format_metrics(test)}")
    if len(compared) > 1:
        return report(output, seeds, by_model, syn, data, epochs, time.perf_counter() - t_start, log, threads)
    table = demo_table(results, seeds, labels)
    diag = demo_diagnostics(diagnostics, labels)
    elapsed = time.perf_counter() - t_start
    log("")
    log(table)
    log("")
    log(diag)
    chart = demo_chart(results, os.path.join(output, "results.png"), labels, cfg.model)
    variant = describe(cfg)
    md = ["# vsl-train --demo" + (f" ({variant})" if variant else ""), "",
          "Synthetic SCAN-format data built after the failure case of the VSL paper's Fig. 1: every image has a "
          "main object over many regions and small secondary objects, its captions describe the main object only, "
          "and half of the secondary objects repeat another image's main content. Same model, data and seeds in "
          "both arms; only the VSL term differs. Test split, best-validation-rsum epoch.", "",
          *([header_note(cfg), ""] if variant else []),
          table, "",
          "What the text-to-image errors are made of (test split, mean over seeds):", "",
          diag, "",
          f"Recipe: model {cfg.model} (embed {cfg.embed_size}"
          f"{', mean pooling' if cfg.model == 'vse' else ''}), batch {cfg.batch_size}, {cfg.epochs} epochs, "
          f"Adam lr {cfg.lr:g} then x{cfg.lr_decay:g} after epoch {cfg.lr_update}, margin {cfg.margin}, "
          f"beta {cfg.beta:g}, tau {cfg.tau:g}, seeds {list(seeds)}; total wall time {elapsed:.0f} s.", "",
          *(["![R@K](results.png)", ""] if chart else [])]
    summary = {"seeds": list(seeds), "results": results, "diagnostics": diagnostics, "synthetic_config": asdict(syn),
               "train_config": asdict(cfg), "seconds": elapsed, "table": table,
               "environment": run_environment(threads)}
    return write_results(output, md, summary, chart, log)


def write_results(output: str, md: List[str], summary: dict, chart: bool, log: Callable[[str], None]) -> dict:
    """Write a demo's ``results.md`` (lines ``md``) and ``results.json`` (``summary``) atomically
    beside its ``results.png`` (when ``chart``), say so, and return ``summary``."""
    atomic_write(os.path.join(output, "results.md"), "\n".join(md))
    atomic_write(os.path.join(output, "results.json"), json.dumps(summary, indent=1))
    written = ["results.md", "results.json"] + (["results.png"] if chart else [])
    log(f"\ntotal {summary['seconds']:.0f} s; written to {output}: {', '.join(written)}")
    if not chart:
        log("matplotlib is not installed: no results.png (pip install matplotlib, or the train extra)")
    return summary
