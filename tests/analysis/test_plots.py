"""analysis/reporting/plots.py: the plots draw what the frames hold, into PNG files."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fake_experiment import sampler_like, smoke_like
from matplotlib.image import imread

from analysis.load import load_experiment
from analysis.rank import rank_trials
from analysis.reporting.plots import (
    image_grid,
    plot_learning_curves,
    plot_metric_vs_params,
    plot_sample_panels,
    plot_sampler_panels,
    save_image_grid,
)
from analysis.reporting.sampler import checkpoints_frame, looks


def test_image_grid_tiles_images_row_by_row_with_white_padding(tmp_path):
    images = np.zeros((10, 1, 3, 2), dtype=np.uint8)
    images[9] = 128
    grid = image_grid(images, nrow=4, padding=1)
    assert grid.shape == (3 * 4 + 1, 4 * 3 + 1)
    assert grid[0].min() == 1.0 and grid[1, 1] == 0.0  # padding white, first image black
    assert np.allclose(grid[9:12, 4:6], 128 / 255) and (grid == 128 / 255).sum() == 6  # image 9: row 2, column 1
    path = save_image_grid(images, tmp_path / "grid.png", nrow=4)
    assert imread(str(path)).shape[:2] == image_grid(images, nrow=4).shape  # one pixel per image pixel


def test_joint_plots_write_one_png_each(tmp_path):
    exp = load_experiment(smoke_like(tmp_path, study=False).exp_dir)
    ranked = rank_trials(exp.trials)
    png = plot_metric_vs_params(ranked, exp.params, "kid", tmp_path / "params.png", {"5d0b1_00002": "best"})
    assert imread(str(png)).shape[1] == 3 * 420  # one panel per searched parameter, three a row
    png = plot_learning_curves(exp.evaluations, [("top", ["5d0b1_00002"]), ("none", [])], "kid", tmp_path / "c.png")
    assert imread(str(png)).shape[1] == 2 * 520
    panels = [("real", image_grid(np.zeros((4, 1, 28, 28), dtype=np.uint8)))]
    panels += [(t, p) for t, p in (("a", next(exp.exp_dir.glob("trial_*/checkpoint_*/samples.png"))),)]
    assert imread(str(plot_sample_panels(panels, tmp_path / "s.png"))).shape[1] == 2 * 300


def test_sampler_panels_draw_one_panel_per_source_checkpoint(tmp_path):
    exp = load_experiment(sampler_like(tmp_path).exp_dir)
    ckpts = checkpoints_frame(exp)
    assert len(ckpts) == 1
    for front in (False, True):
        png = plot_sampler_panels(
            exp.evaluations,
            ckpts,
            looks(exp),
            "kid",
            "min",
            "nfe_per_sample",
            "nfe",
            tmp_path / f"f{front}.png",
            front=front,
        )
        assert imread(str(png)).shape[1] == 600
    two = pd.concat([ckpts, ckpts.assign(checkpoint="/elsewhere", source="other/checkpoint_000001")])
    png = plot_sampler_panels(
        exp.evaluations, two, looks(exp), "kid", "min", "step_lr", "step", tmp_path / "two.png", front=False
    )
    assert imread(str(png)).shape[1] == 1200
