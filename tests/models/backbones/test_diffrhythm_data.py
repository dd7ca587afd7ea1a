"""DiffRhythm's own prepared data (train.scp + lrc/latent/style .pt files) imports into refrain and trains.

The synthetic dataset is written in DiffRhythm's layout with ``torch.save``: latents (1, 64, T), style
vectors (1, 512), lyric dicts {"time": [...], "lrc": [[ids], ...]}; plus lines that must be skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.diffrhythm import tiny_diffrhythm, write_dataset
from torch.utils.data import DataLoader

from refrain.cli.import_diffrhythm import main as import_main
from refrain.data.diffrhythm import DiffRhythmDataset, collate_diffrhythm
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbones.diffrhythm_lyrics import (
    COMMA_ID,
    PERIOD_ID,
    frame_of,
    lines_in_window,
    place_lyrics,
)

WIDE = {"latent_dim": 64, "max_frames": 64, "text_dim": 512}  # the release's data widths


def test_lyric_placement_follows_the_release_rules() -> None:
    ids = place_lyrics([(1.0, [5, 2, 6]), (1.05, [7, 8]), (2.95, [9] * 10)], max_frames=64)
    start = frame_of(1.0)  # int(1.0 * 44100 / 2048) = 21
    assert start == 21
    assert ids[start : start + 4].tolist() == [
        5,
        COMMA_ID,
        6,
        PERIOD_ID,
    ]  # inner period -> comma, period at end
    assert ids[start + 4 : start + 7].tolist() == [7, 8, PERIOD_ID]  # would start inside line 1: right after
    assert ids[63].item() == 9 and ids[:start].abs().sum() == 0  # the last line is cut at the window
    times, lines = [0.5, 3.0, 5.0, 300.0], [[3], [4], [5], [6]]
    assert lines_in_window(times, lines, 2.0, 6144) == [
        (1.0, [4]),
        (3.0, [5]),
    ]  # shifted, earlier/later dropped
    assert lines_in_window(times, lines, 0.0, 2048) == [
        (0.5, [3]),
        (3.0, [4]),
    ]  # base model: last line dropped


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diffrhythm_data")
    assert (
        import_main(["--scp", str(write_dataset(root / "dataset")), "--output", str(root / "imported")]) == 0
    )
    return root / "imported"


def test_import_keeps_good_songs_and_names_every_skipped_line(imported: Path, capsys) -> None:
    index = json.loads((imported / "index.json").read_text())
    assert [e["utt"] for e in index["entries"]] == ["s0", "s1", "s2"]
    assert [e["frames"] for e in index["entries"]] == [120, 90, 150]
    reasons = {s["line"].rsplit(":", 1)[1]: s["reason"] for s in index["skipped"]}
    assert set(reasons) == {"4", "5", "6", "7"}
    assert "not (1, 64, T)" in reasons["4"] and "not found" in reasons["5"]
    assert "not plain tensors" in reasons["6"] and "3 fields" in reasons["7"]
    again = import_main(["--scp", index["source"], "--output", str(imported)])
    assert again == 2 and "already holds an import" in capsys.readouterr().err  # nothing overwritten


def test_imported_items_crop_place_lyrics_and_feed_the_backbone(imported: Path) -> None:
    data = DiffRhythmDataset(imported, max_frames=2048, random_crop=False)
    item = data[0]
    lines = [(0.5, [10, 11, 2]), (1.5, [12]), (3.0, [13, 14])]  # 4.0 s is the last line: dropped at 2048
    assert item["latent_mean"].shape == (64, frame_of(4.0))  # valid frames end where the last line starts
    torch.testing.assert_close(item["diffrhythm_lyrics"], place_lyrics(lines, 2048)[: frame_of(4.0)])
    crops = DiffRhythmDataset(imported, max_frames=64, seed=1)
    starts = set()
    for epoch in range(6):
        crops.epoch = epoch
        starts.add(float(crops[2]["diffrhythm_start"]))
    assert len(starts) > 1 and all(0 <= s <= (150 - 64) / 150 for s in starts)  # the release's random crop
    batch = collate_diffrhythm([crops[0], crops[1]])
    model = tiny_diffrhythm(**WIDE)
    cond = model.conditioning_from_batch(batch)
    out = FlowMatchingLoss(**model.backbone_spec.loss_preset)(model, batch["latent_mean"], cond)
    assert torch.isfinite(out.loss) and cond.style.shape == (2, 512) and cond.start_time.shape == (2,)


@pytest.mark.slow
def test_lightning_trains_the_backbone_on_an_imported_dataset(imported: Path, tmp_path: Path) -> None:
    import lightning as L

    from refrain.tasks.dit_task import DiTTask

    model = tiny_diffrhythm(**WIDE, perturb=0.0)
    task = DiTTask(model, loss=FlowMatchingLoss(**model.backbone_spec.loss_preset))
    loader = DataLoader(
        DiffRhythmDataset(imported, max_frames=64), batch_size=2, collate_fn=collate_diffrhythm
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, train_dataloaders=loader)
    assert trainer.global_step == 3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
