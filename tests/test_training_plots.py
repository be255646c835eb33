"""experiments.training.plots: centred smoothing (no lag) and the readability check."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import training


def test_centred_mean_does_not_lag():
    x = np.arange(100.0)
    y = 3.0 * x + 1.0
    xs, means = training.centred_mean(x, y, 9)
    np.testing.assert_array_equal(xs, x[4:96])
    np.testing.assert_allclose(means, 3.0 * xs + 1.0)  # a trailing mean would be 12 lower
    xs, means = training.centred_mean(x[:5], y[:5], 9)
    assert len(xs) == len(means) == 0
    with pytest.raises(ValueError, match="odd"):
        training.centred_mean(x, y, 4)


def test_smoothing_window_is_odd_and_grows_with_the_run():
    assert [training.smoothing_window(n) for n in (10, 100, 2000)] == [1, 3, 41]


def test_missing_labels_finds_what_a_reader_would_miss():
    plt = training.pyplot()
    fig, axes = plt.subplots(1, 2, sharey=True)
    axes[0].plot([1, 2])
    im = axes[1].imshow(np.eye(2))
    bar = fig.colorbar(im, ax=axes[1])
    assert training.missing_labels(fig) == [
        "panel 0 (untitled): no x label",
        "panel 0 (untitled): no y label",
        "panel 1 (untitled): no x label",
        "panel 1 (untitled): no y label",
        "no title",
        "a colour bar without a label",
    ]
    axes[0].set(xlabel="step", ylabel="loss (nats)", title="a")
    axes[1].set(xlabel="predicted class")  # its y axis is shared with panel 0's
    bar.set_label("examples")
    assert training.missing_labels(fig) == []
    plt.close(fig)


def test_save_figures_writes_pngs_and_closes_them(tmp_path):
    plt = training.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    paths = training.save_figures(str(tmp_path / "plots"), {"a.png": fig})
    assert paths == [str(tmp_path / "plots" / "a.png")]
    assert plt.imread(paths[0]).shape[0] > 100
    assert not plt.fignum_exists(fig.number)
