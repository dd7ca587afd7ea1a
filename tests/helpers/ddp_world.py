"""The real DiT, VAE and LoRA runs of the multi-process tests: a tiny world, the command lines, probes.

``make_world`` prepares five 2 s songs with ``prepare_dataset`` (four train, one validation: an even
train split, so two ranks see whole global batches), saves a tiny VAE bundle, fills the conditioning
cache with ``refrain-encode`` and exports a tiny DiT bundle over the dataset's vocabulary (the LoRA base).
``*_overrides`` are the trainer.py / ``train()`` overrides of each run; the callbacks below are added
with ``+callbacks.NAME._target_=helpers.ddp_world.CLASS`` and so run in every rank.

A one-process reference of a DDP run must draw the random numbers each rank draws: ``RankStreams``
gives micro-batch ``k`` of every optimizer step (``accumulate_grad_batches = world size``, one item per
micro-batch) the RNG stream rank ``k`` uses under ``refrain.training.resume.ExactResume``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from refrain.training.resume import RANK_STRIDE
from refrain.training.rng_state import capture_rng_state, reseed_all, restore_rng_state

REPO = Path(__file__).resolve().parents[2]
TINY_DIT = ["model/dit=tiny", "model.dit.config.latent_channels=16", "model.dit.config.lyric_vocab_size=256"]
QUIET = [
    "logger=none",
    "callbacks.progress=null",
    "callbacks.loss_curves=null",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "num_workers=0",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1000",
    "+trainer.limit_val_batches=0",
    "every_plot_step=100000",
    "trainer.log_every_n_steps=1",
]
SONGS, SECONDS, TEXT_TOKENS = 5, 2.0, 32
# One thread per process, as the in-process references run (tests/conftest.py): the same rounding.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def make_world(root: Path) -> dict[str, Path]:
    """dataset (prepared and encoded), vae (bundle), dit (bundle: the LoRA base), lora (a small JSON)."""
    from helpers.bundles import save_checkpoint, save_vae
    from helpers.tiny_runs import write_songs
    from refrain.bundles.export import export_dit
    from refrain.cli.encode import main as encode
    from refrain.config import compose_config
    from refrain.data.prepare import PrepareOptions, prepare_dataset

    dataset, songs = root / "dataset", write_songs(root / "songs", count=SONGS, seconds=SECONDS)
    result = prepare_dataset(
        PrepareOptions(output_dir=dataset, input_dir=songs, val_fraction=0.01, progress=False)
    )
    assert result.dataset is not None and len(result.dataset["train"]) == SONGS - 1
    save_vae(root / "vae")
    argv = ["--dataset_path", str(dataset), "--vae_bundle", str(root / "vae"), "--device", "cpu"]
    assert encode([*argv, "--text_max_length", str(TEXT_TOKENS), "--no_progress"]) == 0
    spec = OmegaConf.to_container(compose_config(TINY_DIT).model.dit, resolve=True)
    source = save_checkpoint(
        root / "dit_source.ckpt", spec, root / "vae", dataset, text_max_length=TEXT_TOKENS
    )
    export_dit(source, root / "dit", use_ema=False)
    lora = json.loads((REPO / "lora_configs" / "text2sample.json").read_text())
    lora.update(r=4, lora_alpha=4)  # dropout stays: its draws must follow each rank's stream too
    (root / "text2sample.json").write_text(json.dumps(lora))
    names = {"dataset": dataset, "vae": root / "vae", "dit": root / "dit", "lora": root / "text2sample.json"}
    return {"root": root, **names}


def dit_overrides(world: dict[str, Path], run_dir: Path, steps: int) -> list[str]:
    """The demo DiT recipe (masked spans: some batches carry a context, some not), one item per rank."""
    return [
        "experiment=demo_dit",
        "~repa",
        *TINY_DIT,
        f"dataset_path={world['dataset']}",
        f"vae_bundle={world['vae']}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={steps}",
        "every_n_train_steps=5",
        "data.batch_size=1",
        "data.max_frames=32",
        f"data.storage.text_max_length={TEXT_TOKENS}",
        "data.val_items=1",
        "task.loss.masked_span_prob=0.5",
        *QUIET,
    ]


def lora_overrides(world: dict[str, Path], run_dir: Path, steps: int) -> list[str]:
    """text2sample over the world's DiT bundle (ACE-Step's --checkpoint_dir/--lora_config_path routing)."""
    return [
        f"checkpoint_dir={world['dit']}",
        f"lora_config_path={world['lora']}",
        f"dataset_path={world['dataset']}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={steps}",
        "every_n_train_steps=5",
        "learning_rate=1e-2",
        "data.batch_size=1",
        "data.max_frames=32",
        "data.val_items=1",
        *QUIET,
    ]


# The demo VAE recipe, shrunk (hop 64), GAN from step 12. Terms that are not a mean over items are left
# out so that two ranks' mean equals one batch's: spectral convergence and feature matching divide by a
# norm over the whole batch. The posterior mean is decoded (a sample would follow each rank's stream).
# SGD with momentum instead of AdamW: one batch of two and two batches of one round differently (~1e-7),
# and Adam's first steps are sign steps, so a near-zero gradient whose sign flips moves a weight by a
# whole lr; measured, one process at 1 vs 2 threads then ends 3e-3 apart, as far as DDP from one process.
# Under SGD both stay at rounding size (<= 2.5e-7), so the comparison can be tight.
VAE_SHRINK = [
    "model.vae.downsampling_ratios=[2,4,8]",
    "model.vae.channel_multiples=[1,2,4]",
    "model.vae.hop_length=64",
    "model.vae.latent_channels=4",
    "model.vae.encoder_hidden_size=8",
    "model.vae.decoder_channels=8",
    "task.discriminator.filters=4",
    "task.discriminator.n_ffts=[512,256,128]",
    "task.spectral_loss.fft_sizes=[512,256,128,64]",
    "+task.spectral_loss.w_sc=0.0",
    "task.objective.feature_matching=0.0",
    "task.objective.sample_posterior=false",
    "task.objective.adversarial_start_step=12",
    "task.generator_optimizer._target_=torch.optim.SGD",
    "~task.generator_optimizer.betas",
    "+task.generator_optimizer.momentum=0.9",
    "task.discriminator_optimizer._target_=torch.optim.SGD",
    "~task.discriminator_optimizer.betas",
    "+task.discriminator_optimizer.momentum=0.9",
    "learning_rate=1e-3",
    "task.discriminator_optimizer.lr=1e-3",
]


def vae_overrides(world: dict[str, Path], run_dir: Path, steps: int) -> list[str]:
    return [
        "experiment=demo_vae",
        "model/vae=tiny",
        f"dataset_path={world['dataset']}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={steps}",
        "every_n_train_steps=5",
        "data.crop_samples=4096",
        "data.batch_size=1",
        "data.val_items=1",
        *VAE_SHRINK,
        *QUIET,
    ]


def ddp(*overrides: str, devices: int = 2) -> list[str]:
    """The shipped DDP preset over ``devices`` CPU processes (gloo), failing a hung collective in 60 s."""
    return [*overrides, "trainer=ddp", f"trainer.devices={devices}", "trainer.strategy.timeout.seconds=60"]


def reference(*overrides: str, world_size: int = 2) -> list[str]:
    """One process that sees what ``world_size`` ranks see: one rank per micro-batch, its RNG stream."""
    return [
        *overrides,
        f"trainer.accumulate_grad_batches={world_size}",
        "callbacks.resume=null",
        "+callbacks.streams._target_=helpers.ddp_world.RankStreams",
        f"+callbacks.streams.world_size={world_size}",
    ]


def probes(folder: Path, poison_step: int | None = None, poison_key: str = "latent_mean") -> list[str]:
    """Per-rank loss files under ``folder``; optionally a NaN in rank 1's item at ``poison_step``."""
    items = [
        "+callbacks.losses._target_=helpers.ddp_world.RankLosses",
        f"+callbacks.losses.folder={folder}",
    ]
    if poison_step is not None:
        items += [
            "+callbacks.poison._target_=helpers.ddp_world.PoisonRank",
            f"+callbacks.poison.step={poison_step}",
            f"+callbacks.poison.key={poison_key}",
        ]
    return items


def run_cli(overrides: list[str], log: Path, timeout: float = 300) -> str:
    """``python trainer.py OVERRIDES`` (Lightning starts the other ranks itself); returns its output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
        **SINGLE_THREAD,
    )
    with open(log, "w") as handle:
        process = subprocess.run(
            [sys.executable, str(REPO / "trainer.py"), *overrides],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    output = log.read_text()
    assert process.returncode == 0, output[-4000:]
    return output


# ----- probes (callbacks) -----
def _loss_of(trainer: pl.Trainer, pl_module: Any, outputs: Any) -> float:
    if not pl_module.automatic_optimization:  # the VAE: the loss it logged this step
        value = trainer.callback_metrics.get("train/loss")
        return float("nan") if value is None else float(value)
    if isinstance(outputs, dict) and outputs.get("loss") is not None:  # scaled by 1/accumulation
        return float(outputs["loss"]) * trainer.accumulate_grad_batches
    return float("nan")  # the step returned nothing: a skipped non-finite micro-batch


class RankLosses(pl.Callback):
    """Append ``global_step,loss`` per batch to ``folder/rank<R>.csv`` (opened per line: survives a kill)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.csv", "a") as handle:
            handle.write(f"{trainer.global_step},{_loss_of(trainer, pl_module, outputs).hex()}\n")


def read_rank_losses(folder: Path, world_size: int = 2) -> list[list[float]]:
    """Losses per rank, in step order; a one-process reference's micro-batch ``k`` is rank ``k``."""
    files = sorted(Path(folder).glob("rank*.csv"))
    rows = [[float.fromhex(line.split(",")[1]) for line in f.read_text().split()] for f in files]
    if len(rows) == 1 and world_size > 1:
        return [rows[0][k::world_size] for k in range(world_size)]
    return rows


class PoisonRank(pl.Callback):
    """Once, at ``step``: NaN into the item rank ``rank`` trains on (its row in a one-process reference)."""

    def __init__(self, step: int, key: str = "latent_mean", rank: int = 1) -> None:
        self.step, self.key, self.rank, self.done = step, key, rank, False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        if self.done or trainer.global_step != self.step:
            return
        target = batch[self.key]
        if trainer.world_size > 1:  # DDP: this rank's whole batch
            if trainer.global_rank != self.rank:
                return
        elif trainer.accumulate_grad_batches > 1:  # RankStreams' reference: micro-batch k is rank k
            if idx % trainer.accumulate_grad_batches != self.rank:
                return
        else:  # one batch of one item per rank: row k is rank k's item
            target = target[self.rank]
        target.fill_(float("nan"))
        self.done = True


class RankStreams(pl.Callback):
    """Micro-batch ``k`` of each step draws from the stream rank ``k`` has under ExactResume (see module doc)."""

    def __init__(self, world_size: int = 2) -> None:
        self.world_size = world_size
        self.states: list[dict[str, Any]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.states = []
        for rank in range(self.world_size):  # ExactResume.on_train_start's reseed of rank r
            reseed_all(torch.initial_seed() + RANK_STRIDE * rank)
            self.states.append(capture_rng_state())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        restore_rng_state(self.states[idx % self.world_size])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.states[idx % self.world_size] = capture_rng_state()


def final_state(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return int(checkpoint["global_step"]), checkpoint["state_dict"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
