"""What a demo shows and where it writes: the charts' legends and titles, one folder per variant, and
no demo replacing an earlier one without --overwrite."""
import os

import pytest

from vsl_ext.harness import demo as demo_mod
from vsl_ext.harness.data.synthetic import SyntheticConfig
from vsl_ext.harness.demo_variants import default_output
from vsl_ext.harness.train import TrainConfig
from vsl_ext.harness.train import main as train_main

KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def _results(base: float, seeds: int = 3):
    """Per-seed metric dicts; the values only need to differ between arms and seeds."""
    return [{k: base + i + j for j, k in enumerate(KEYS)} for i in range(seeds)]


def _texts(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _bar_colours(ax):
    """The face colour of each legend entry's bars (one container per arm)."""
    return [tuple(c.patches[0].get_facecolor()) for c in ax.containers if hasattr(c, "patches")]


def test_demo_chart_legend_names_the_arms_not_the_metrics():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    labels = ("triplet + 0.1 phrase (baseline)", "triplet + 0.1 phrase + 10 VSL")
    fig = demo_mod.demo_figure({"baseline": _results(40), "vsl": _results(41)}, labels, "ssamt")
    try:
        (ax,) = fig.axes
        assert _texts(ax) == list(labels)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["i2t R@1", "i2t R@5", "i2t R@10",
                                                                  "t2i R@1", "t2i R@5", "t2i R@10"]
        colours = _bar_colours(ax)
        assert len(colours) == 2 and colours[0] != colours[1]   # one colour per arm, distinct
        assert "ssamt" in ax.get_title() and "3 seeds" in ax.get_title()
        # the legend sits below the axes, so it covers no bar
        fig.canvas.draw()
        legend_box = ax.get_legend().get_window_extent()
        assert legend_box.y1 <= ax.get_window_extent().y0
    finally:
        plt.close(fig)


def test_3shnet_chart_legend_names_its_four_arms():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from vsl_ext.harness.demo_shnet import ARMS, comparison_figure

    results = {m: ({"baseline": _results(40), "vsl": _results(42)}, None) for m in ("vse", "3shnet")}
    fig = comparison_figure(results)
    try:
        (ax,) = fig.axes
        assert _texts(ax) == [label for _, _, label in ARMS]
        assert len(set(_bar_colours(ax))) == len(ARMS)
    finally:
        plt.close(fig)


def test_each_demo_variant_has_its_own_default_folder():
    names = [default_output({}), default_output({"model": "ssamt"}), default_output({"model": "3shnet"}),
             default_output({"semantic": "phrases", "phrase_level": True}),
             default_output({"semantic": "phrases", "phrase_level": True, "phrase_weight": 1.0}),
             default_output({"semantic": "cider-d"})]
    assert names[0] == "demo"
    assert len(set(names)) == len(names)


@pytest.fixture
def small_demo(monkeypatch):
    """run_demo on 12/4/4 images with the tests' tiny model, one epoch."""
    small = SyntheticConfig(train_images=12, dev_images=4, test_images=4, regions=5, feat_dim=12)
    monkeypatch.setattr("vsl_ext.harness.data.synthetic.SyntheticConfig", lambda: small)

    def tiny(data, output, seed, vsl, epochs=None, device="auto", progress=True, threads=1, overrides=None):
        return TrainConfig(data=data, dataset="synthetic", output=output, embed_size=16, word_dim=8,
                           batch_size=20, epochs=1, progress=False, tensorboard=False, seed=seed, vsl=vsl,
                           test_split="test", threads=1, overwrite=True)

    monkeypatch.setattr(demo_mod, "demo_config", tiny)


def test_a_demo_never_replaces_an_earlier_one_without_overwrite(small_demo, tmp_path, capsys):
    out = tmp_path / "demo"
    quiet = dict(progress=False, log=lambda m: None)
    demo_mod.run_demo(str(out), seeds=[0, 1], **quiet)
    before = {name: os.path.getmtime(out / name) for name in ("results.json", "baseline_seed1")}
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo_mod.run_demo(str(out), seeds=[0], **quiet)
    assert {name: os.path.getmtime(out / name) for name in before} == before   # untouched
    # the command line says so and exits 2
    assert train_main(["--demo", "--seeds", "0", "--demo-epochs", "1", "--output", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite replaces the whole earlier demo: no seed folder of the old run survives beside the new one
    summary = demo_mod.run_demo(str(out), seeds=[0], overwrite=True, **quiet)
    assert summary["seeds"] == [0]
    kept = set(os.listdir(out)) - {"results.png"}     # (no PNG without matplotlib)
    assert kept == {"baseline_seed0", "vsl_seed0", "data", "notes.txt", "results.json", "results.md"}
    assert not (out / "baseline_seed1").exists() and (out / "notes.txt").read_text() == "mine"


def test_a_demo_may_start_in_a_folder_without_a_demo(small_demo, tmp_path):
    (tmp_path / "README").write_text("a folder the user made")
    demo_mod.run_demo(str(tmp_path), seeds=[0], progress=False, log=lambda m: None)
    assert (tmp_path / "results.json").is_file() and (tmp_path / "README").is_file()
