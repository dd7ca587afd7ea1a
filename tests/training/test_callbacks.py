"""Loss-curve plot and console callbacks: readable axes, bounded history, no 'Epoch 0/-2'."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from refrain.training.callbacks import LossCurvePlot, StepProgressBar, scale_axis, thin


def test_a_narrow_range_keeps_its_tick_labels() -> None:
    """0.95..1.05 on a log (or symlog) axis has no major tick, so no label at all; it must stay linear."""
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    values = [0.95, 1.0, 1.02, 1.05]
    ax.plot(range(4), values)
    scale_axis(ax, values)
    fig.canvas.draw()
    assert ax.get_yscale() == "linear"
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3
    wide = Figure().subplots()
    scale_axis(wide, [0.01, 5.0])
    assert wide.get_yscale() == "log"


def test_history_is_thinned_not_dropped() -> None:
    series = [(i, float(i)) for i in range(10)]
    assert thin(series, 10) == series
    halved = thin(series, 4)
    assert len(halved) == 5 and halved[0] == (1, 0.5) and halved[-1] == (9, 8.5)


def test_curves_survive_a_checkpoint_round_trip(tmp_path) -> None:
    plot = LossCurvePlot(tmp_path / "curves.png")
    plot.history["train/loss"] = [(1, 2.0), (2, 1.5)]
    plot.validation["val/flow"] = [(2, 1.1)]
    state = plot.state_dict()
    torch.save(state, tmp_path / "s.pt")
    restored = LossCurvePlot(tmp_path / "curves.png")
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert restored.history["train/loss"] == [(1, 2.0), (2, 1.5)] and restored.validation["val/flow"] == [
        (2, 1.1)
    ]
    assert restored.write().stat().st_size > 5000


def test_a_step_bounded_run_shows_its_epoch_without_a_negative_total() -> None:
    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)  # what Lightning sets for max_steps without max_epochs
    assert bar._get_train_description(3).strip() == "Epoch 3"
    bar._trainer = SimpleNamespace(max_epochs=10)
    assert bar._get_train_description(3).strip() == "Epoch 3/9"


def test_curves_are_rewritten_once_a_minute_whatever_the_step_rate(tmp_path, monkeypatch) -> None:
    now = [100.0]
    plot = LossCurvePlot(tmp_path / "curves.png", every_seconds=60.0, clock=lambda: now[0])
    writes: list[float] = []
    real_write = plot.write
    monkeypatch.setattr(plot, "write", lambda: (writes.append(now[0]), real_write())[1])
    trainer = SimpleNamespace(
        global_step=1, callback_metrics={"train/loss": torch.tensor(1.0)}, is_global_zero=True
    )
    plot.on_train_start(trainer, None)
    for _ in range(100):  # 100 steps of 1.5 s: a write at 60 s, 120 s
        now[0] += 1.5
        trainer.global_step += 1
        plot.on_train_batch_end(trainer, None, None, None, 0)
    assert writes == [160.0, 220.0]
    assert len(plot.history["train/loss"]) == 100  # every step is still recorded


def test_the_cadence_is_a_config_key_as_the_readme_names_it() -> None:
    from hydra.utils import instantiate

    from refrain.config import compose_config

    assert compose_config([]).callbacks.loss_curves.every_seconds == 60.0
    node = compose_config(["callbacks.loss_curves.every_seconds=30"]).callbacks.loss_curves
    assert instantiate(node, path="x.png").every_seconds == 30.0
