"""The robustness figure: bars at one ε unless every attack ran at >= 3 radii, one colour per encoder in every panel."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from hf_ssl_robust.plots import bar_eps, main, robustness_figure  # noqa: E402


def record(encoder, task, attack, eps, value, metric=None, **extra):
    metric = metric or {"classification": "accuracy", "segmentation": "mean_iou", "depth": "rmse"}[task]
    return dict(encoder=encoder, task=task, dataset="shapes", attack=attack, eps=eps, steps=20, metric=metric,
                value=value, num_samples=16, **extra)


def two_encoders(radii=(8 / 255,)):
    rows = []
    for task, attack in (("classification", "pgd"), ("depth", "depth_pgd")):
        for enc, clean in (("std", 0.9), ("twin", 0.7)):
            rows.append(record(enc, task, "none", 0.0, clean))
            for eps in radii:
                rows += [record(enc, task, "embed", eps, clean / 2), record(enc, task, attack, eps, clean / 3)]
        rows.append(record("prior", task, "none", 0.0, 0.2))
    return rows


def bar_colours(ax):
    return [to_hex(p.get_facecolor()) for p in ax.patches]


def test_robustness_figure__one_eps_gives_bars_with_the_same_colours_in_every_panel():
    fig = robustness_figure(two_encoders())
    cls, depth = fig.axes
    for ax in (cls, depth):
        assert len(ax.patches) == 6  # clean, EmbedAttack, task attack x two encoders
        assert [t.get_text() for t in ax.get_xticklabels()][0] == "Clean"
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(0.2)  # the prior
        assert ax.get_xlabel() == "ε = 8/255"
    assert bar_colours(cls) == bar_colours(depth)
    assert bar_colours(cls)[0] != bar_colours(cls)[3]  # two encoders, two colours
    plt.close(fig)


def test_robustness_figure__three_radii_give_curves_and_two_do_not():
    two = robustness_figure(two_encoders((4 / 255, 8 / 255)))
    assert len(two.axes[0].patches) == 6 and two.axes[0].get_xlabel() == "ε = 8/255"  # the larger radius
    three = robustness_figure(two_encoders((2 / 255, 4 / 255, 8 / 255)))
    ax = three.axes[0]
    assert not ax.patches
    solid = [line for line in ax.get_lines() if not line.get_label().startswith("image-free")]
    assert len(solid) == 4 and all(len(line.get_xdata()) == 4 for line in solid)  # clean + 3 radii
    colours = {line.get_label().split(" · ")[0]: to_hex(line.get_color()) for line in solid}
    assert len(set(colours.values())) == 2
    plt.close("all")


def test_robustness_figure__error_bars_from_ci95_and_bar_eps():
    rows = [record("std", "classification", "none", 0.0, 0.9, ci95=[0.85, 0.95]),
            record("std", "classification", "pgd", 8 / 255, 0.1, ci95=[0.05, 0.15])]
    fig = robustness_figure(rows)
    assert any(getattr(c, "errorbar", None) is not None for c in fig.axes[0].containers)
    plt.close(fig)
    assert bar_eps(rows) == pytest.approx(8 / 255) and bar_eps(rows[:1]) is None


def test_plot_results_script__merges_results_files(tmp_path, capsys):
    import json

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(two_encoders()))
    b.write_text(json.dumps([record("random", "classification", "none", 0.0, 0.18)]))
    out = main([str(a), str(b), "--output", str(tmp_path / "fig.png")])
    assert out.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
