"""``vsl-train --demo --model 3shnet``: the ``3shnet`` arms beside the ``vse`` arms, side by side.

The demo data's captions describe an image's MAIN object, and small SECONDARY objects repeat other
images' main content (the VSL paper's Fig. 1). ``3shnet`` additionally sees a segmentation of every
image (which class covers which cells, :mod:`.data.synthetic`), so it can tell the main object from
the secondary ones by their area. The table answers: does knowing the main object's segment help
where secondary content misleads (``3shnet`` vs ``vse``, both triplet only; the diagnostics' Fig.-1
error row), and does VSL add to it (``3shnet`` + VSL vs ``3shnet``)?
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .config import TrainConfig
from .demo import DEMO_METRICS, _mean_std, run_environment, save_figure, write_results
from .demo_variants import MODEL_RECIPES

ARMS = (("vse", "baseline", "vse triplet"), ("vse", "vsl", "vse + 10 VSL"),
        ("3shnet", "baseline", "3shnet triplet"), ("3shnet", "vsl", "3shnet + 10 VSL"))
DIAGNOSTICS = (("t2i top-1 image consistent with the caption (%)", "consistent", "{:.1f}"),
               ("t2i top-1 errors of the Fig.-1 kind: object only secondary there (%)", "secondary_match", "{:.2f}"),
               ("rank agreement of S with the caption similarity C (Spearman)", "rank_agreement", "{:.3f}"))

Results = Dict[str, Tuple[Dict[str, List[dict]], Dict[str, List[dict]]]]


def shnet_config(vse_config: TrainConfig) -> TrainConfig:
    """The demo's ``3shnet`` recipe: the ``vse`` arm's (joint space, batch, schedule, loss, seed) with
    the 3shnet model (BiGRU text encoder, spatial keys 128, region drop 0.2) and 3SHNet's warm-up: the
    first epoch's triplet loss sums over all negatives (``--max-violation-warmup 1``, as 3SHNet's
    training script sets ``--vse_mean_warmup_epochs 1``; :data:`.demo_variants.MODEL_RECIPES`)."""
    return dataclasses.replace(vse_config, model="3shnet", **MODEL_RECIPES["3shnet"])


def _delta(a: Sequence[float], b: Sequence[float]) -> str:
    """mean(a - b) and on how many seeds a > b."""
    diff = float(np.mean(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
    return f"{diff:+.1f} ({sum(x > y for x, y in zip(a, b))}/{len(a)})"


def comparison_table(results: Results, seeds: Sequence[int]) -> str:
    """Markdown: mean ± sample std over seeds for the four arms, and two differences (mean, and on
    how many seeds the first is higher): 3shnet vs vse (triplet only), VSL's gain on 3shnet."""
    head = " | ".join(label for _, _, label in ARMS)
    lines = [f"| metric (test, {len(seeds)} seeds) | {head} | 3shnet − vse (triplet) | 3shnet: VSL − triplet |",
             "|---" * (len(ARMS) + 3) + "|"]
    for key, label in DEMO_METRICS:
        vals = {(m, arm): [r[key] for r in results[m][0][arm]] for m, arm, _ in ARMS}
        cells = ["{:.1f} ± {:.1f}".format(*_mean_std(vals[m, arm])) for m, arm, _ in ARMS]
        lines.append(f"| {label} | {' | '.join(cells)} | {_delta(vals['3shnet', 'baseline'], vals['vse', 'baseline'])} "
                     f"| {_delta(vals['3shnet', 'vsl'], vals['3shnet', 'baseline'])} |")
    return "\n".join(lines)


def comparison_diagnostics(results: Results) -> str:
    """Markdown: :func:`..data.synthetic.failure_analysis` for the four arms, mean over seeds."""
    lines = [f"| diagnostic | {' | '.join(label for _, _, label in ARMS)} |", "|---" * (len(ARMS) + 1) + "|"]
    for label, key, fmt in DIAGNOSTICS:
        cells = [fmt.format(float(np.mean([d[key] for d in results[m][1][arm]]))) for m, arm, _ in ARMS]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    oracle = float(np.mean([d["oracle_t2i_r1"] for d in results["vse"][1]["baseline"]]))
    lines.append(f"| t2i R@1 ceiling: random pick among caption-consistent images (%) | "
                 f"{' | '.join(f'{oracle:.1f}' for _ in ARMS)} |")
    return "\n".join(lines)


def comparison_figure(results: Results):
    """Grouped bars of the four arms as a matplotlib Figure: one colour per arm (legend: the arms'
    labels), one group per metric, bar = mean over seeds, error bar = sample std. ImportError without
    matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(k, lab) for k, lab in DEMO_METRICS if k != "rsum"]
    x = np.arange(len(metrics))
    width = 0.8 / len(ARMS)
    fig, ax = plt.subplots(figsize=(10, 4.4), layout="constrained")
    for n, (m, arm, label) in enumerate(ARMS):
        stats = [_mean_std([r[k] for r in results[m][0][arm]]) for k, _ in metrics]
        bars = ax.bar(x + (n - (len(ARMS) - 1) / 2) * width, [s[0] for s in stats], width,
                      yerr=[s[1] for s in stats], capsize=2, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=4, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels([lab for _, lab in metrics])
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 112)
    n = len(results["vse"][0]["vsl"])
    ax.set_title(f"Synthetic Fig.-1 data with segmentation, test set, mean ± std over {n} seed{'s' if n != 1 else ''}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(ARMS), frameon=False)
    return fig


def comparison_chart(results: Results, path: str) -> bool:
    """Write :func:`comparison_figure` to ``path`` (PNG); False without matplotlib."""
    try:
        fig = comparison_figure(results)
    except ImportError:
        return False
    save_figure(fig, path)
    return True


def report(output: str, seeds: Sequence[int], results: Results, syn, data: str, epochs, elapsed: float,
           log: Callable[[str], None], threads: int = 1) -> dict:
    """Prints the tables and writes ``results.md``, ``results.png`` and ``results.json`` to ``output``."""
    from .demo import demo_config

    table, diag = comparison_table(results, seeds), comparison_diagnostics(results)
    log("")
    log(table)
    log("")
    log(diag)
    cfg = demo_config(data, output, 0, True, epochs)
    chart = comparison_chart(results, os.path.join(output, "results.png"))
    md = ["# vsl-train --demo --model 3shnet", "",
          "Synthetic SCAN-format data built after the failure case of the VSL paper's Fig. 1 (main object over "
          "many regions, small secondary objects that repeat other images' main content, captions about the main "
          "object only), plus a noisy segmentation of every image in 3SHNet's file layout. `vse` sees the regions "
          "only, `3shnet` the regions and the segmentation; same data and seeds in every arm. Test split, "
          "best-validation-rsum epoch. Differences: mean over seeds (seeds on which the first arm is higher).", "",
          table, "",
          "What the text-to-image errors are made of (test split, mean over seeds):", "",
          diag, "",
          f"Recipe (both models): embed {cfg.embed_size}, batch {cfg.batch_size}, {cfg.epochs} epochs, Adam lr "
          f"{cfg.lr:g} then x{cfg.lr_decay:g} after epoch {cfg.lr_update}, margin {cfg.margin}, beta {cfg.beta:g}, "
          f"tau {cfg.tau:g}; vse: mean pooling, hardest negatives from the start (the `vsl-train --demo` recipe); "
          f"3shnet: BiGRU + GPO text encoder, spatial keys {cfg.spatial_dim}, region drop {cfg.region_drop:g}, first "
          f"epoch over all negatives (3SHNet's warm-up); seeds {list(seeds)}; total wall time {elapsed:.0f} s.", "",
          *(["![R@K](results.png)", ""] if chart else [])]
    summary = {"seeds": list(seeds), "models": ["vse", "3shnet"],
               "results": {m: results[m][0] for m in ("vse", "3shnet")},
               "diagnostics": {m: results[m][1] for m in ("vse", "3shnet")}, "synthetic_config": asdict(syn),
               "train_configs": {"vse": asdict(cfg), "3shnet": asdict(shnet_config(cfg))}, "seconds": elapsed,
               "table": table, "diagnostics_table": diag,
               "environment": run_environment(threads)}
    return write_results(output, md, summary, chart, log)
