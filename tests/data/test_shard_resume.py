"""Two DDP ranks (gloo, CPU) train the real DiT recipe through trainer.py from the sharded cache, are
stopped mid-epoch (SIGTERM on rank 0: the preemption path) and resumed; every batch of both runs equals
the batch the uninterrupted per-rank stream gives at that step, and the ranks' records are disjoint in
every epoch.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.ddp_world import ddp, dit_overrides, run_cli
from helpers.shard_probe import batch_signature, read_batch_log
from hydra.utils import instantiate

from refrain.config import compose_config
from refrain.data.shard_stream import ShardLoader, ShardStream

SONGS, STEPS, STOP_AT = 7, 8, 4  # 6 train records: 3 batches of one per rank and epoch
SHARDING = [
    "data.loader.cache_format=shards",
    "data.loader.shards.num_shards=3",
    "data.loader.shards.buffer_size=4",
]


def shard_world(root: Path) -> dict[str, Path]:
    """Seven 2 s songs prepared (6 train, 1 validation), a tiny VAE, encoded with refrain-encode --shards 2."""
    from helpers.bundles import save_vae
    from helpers.ddp_world import TEXT_TOKENS
    from helpers.tiny_runs import write_songs

    from refrain.cli.encode import main as encode
    from refrain.data.prepare import PrepareOptions, prepare_dataset

    dataset, songs = root / "dataset", write_songs(root / "songs", count=SONGS, seconds=2.0)
    result = prepare_dataset(
        PrepareOptions(output_dir=dataset, input_dir=songs, val_fraction=0.01, progress=False)
    )
    assert result.dataset is not None and len(result.dataset["train"]) == SONGS - 1
    save_vae(root / "vae")
    argv = ["--dataset_path", str(dataset), "--vae_bundle", str(root / "vae"), "--device", "cpu"]
    assert encode([*argv, "--text_max_length", str(TEXT_TOKENS), "--shards", "2", "--no_progress"]) == 0
    return {"root": root, "dataset": dataset, "vae": root / "vae"}


def expected_batches(overrides: list[str], rank: int, steps: int) -> list[dict]:
    """The uninterrupted stream of ``rank`` of 2, built in this process from the same config."""
    module = instantiate(compose_config(overrides).data)
    module.setup("fit")
    stream = ShardStream(module.train_set, 1, module.seed, 4, 3, rank=rank, world_size=2)
    loader, out, epoch = ShardLoader(stream), [], 0
    while len(out) < steps:
        loader.set_epoch(epoch)
        out += [{"epoch": epoch, **batch_signature(batch)} for batch in loader]
        epoch += 1
    return out[:steps]


@pytest.mark.slow
def test_two_ranks_stopped_and_resumed_see_the_uninterrupted_batches(tmp_path: Path) -> None:
    world = shard_world(tmp_path)
    run, logs = tmp_path / "run", tmp_path / "batches"
    common = [*dit_overrides(world, run, STEPS), *SHARDING]
    probe = ["+callbacks.batches._target_=helpers.shard_probe.BatchLog", f"+callbacks.batches.folder={logs}"]
    stop = [
        "+callbacks.kill._target_=helpers.resilience_toys.KillAt",
        f"+callbacks.kill.step={STOP_AT}",
        "+callbacks.kill.sig=SIGTERM",
    ]
    started = time.monotonic()
    run_cli(ddp(*common, *probe, *stop), tmp_path / "stopped.log")
    stopped = [read_batch_log(logs, rank) for rank in (0, 1)]
    stop_step = len(stopped[0])
    assert stop_step == len(stopped[1]) and STOP_AT <= stop_step < STEPS
    assert stop_step % 3, f"stopped at an epoch boundary ({stop_step}): the test needs a mid-epoch stop"
    checkpoint = run / "checkpoints" / "last.ckpt"
    run_cli(ddp(*common, *probe, f"ckpt_path={checkpoint}"), tmp_path / "resumed.log")
    seconds = time.monotonic() - started
    seen = [read_batch_log(logs, rank) for rank in (0, 1)]
    for rank in (0, 1):
        assert [row["step"] for row in seen[rank]] == list(range(STEPS)), seen[rank]
        want = expected_batches(common, rank, STEPS)
        got = [{k: row[k] for k in ("epoch", "keys", "crops", "latent")} for row in seen[rank]]
        assert got == want, f"rank {rank}: resumed batches differ from the uninterrupted stream"
    for epoch in range(STEPS // 3):
        keys = [{k for row in seen[rank] if row["epoch"] == epoch for k in row["keys"]} for rank in (0, 1)]
        assert len(keys[0]) == len(keys[1]) == 3 and not keys[0] & keys[1], f"epoch {epoch}: {keys}"
    print(
        f"2 ranks from shards, stopped at step {stop_step} and resumed to {STEPS}: identical ({seconds:.0f} s)"
    )
