"""Scaling out on CPU with gloo, on the real tasks: the shipped DDP preset trains the DiT, VAE and LoRA tasks
exactly like one process with the same global batch, a rank that dies stops its peer, and a resumed DDP
run repeats the uninterrupted one's losses. The CUDA versions (bf16 DDP, FSDP, FSDP resume on the 223 M
``small`` preset) are marked gpu; ``python bench/bench_gpu.py`` runs them with the GPU benches.

The multi-process runs go through ``python trainer.py`` (Lightning starts rank 1 itself); their one-process
references through ``train()``. Helpers, probes and the tiny world live in tests/helpers/ddp_world.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.ddp_world import (
    REPO,
    SINGLE_THREAD,
    ddp,
    dit_overrides,
    final_state,
    lora_overrides,
    make_world,
    max_difference,
    probes,
    read_rank_losses,
    reference,
    run_cli,
    vae_overrides,
)
from helpers.resilience_toys import DiTBatches, dit_batch, tiny_dit_model
from hydra.utils import instantiate

from refrain.config import compose_config
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.tasks.dit_task import DiTTask, batch_conditioning
from refrain.training.cluster import devices_from_env, nodes_from_env
from refrain.training.dit_plotting import SamplePlotter
from refrain.training.ema import EMA
from refrain.training.run import train

STEPS, POISON_STEP = 20, 12
# Measured on this machine: the DiT and LoRA runs are bit-identical to their references (0.0); the VAE's
# differ by <= 2.3e-7 in weights and 4e-6 in loss (one batch of two vs two batches of one).
WEIGHT_TOLERANCE, LOSS_TOLERANCE = 1e-5, 1e-4
DEAD_RANK_BOUND_S = 60.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("ddp_world"))


@pytest.fixture(scope="module")
def dit_ddp(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The DiT recipe under ``trainer=ddp trainer.devices=2`` for 20 steps; a NaN on rank 1 at step 12."""
    root = tmp_path_factory.mktemp("dit_ddp")
    started = time.time()
    output = run_cli(
        ddp(*dit_overrides(world, root / "run", STEPS), *probes(root / "losses", POISON_STEP)), root / "log"
    )
    return {"root": root, "output": output, "seconds": time.time() - started}


def assert_same_losses(
    got: list[list[float]], want: list[list[float]], tolerance: float = LOSS_TOLERANCE
) -> None:
    assert len(got) == len(want) and [len(r) for r in got] == [len(r) for r in want]
    for a, b in zip(got, want, strict=True):
        pairs = torch.tensor(a), torch.tensor(b)
        assert torch.equal(pairs[0].isnan(), pairs[1].isnan()), (a, b)
        assert torch.allclose(*pairs, atol=tolerance, rtol=0, equal_nan=True), (a, b)


# ----- the root cause, in one process -----
def test_every_dit_parameter_takes_part_in_a_step_without_context_or_speaker() -> None:
    """DDP without find_unused_parameters hangs when a rank leaves a parameter out of its graph."""
    torch.manual_seed(0)
    model = DiffusionTransformer(
        DiTConfig(
            latent_channels=4,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            text_dim=8,
            lyric_vocab_size=20,
            lyric_dim=16,
            lyric_conv_layers=1,
            repa_layer=1,
            speaker_dim=6,
        )
    )
    task = DiTTask(model, loss=FlowMatchingLoss(masked_span_prob=0.0))
    batch = dit_batch(0)
    assert "speaker" not in batch and "context" not in batch
    task.compute_loss(batch)["loss"].backward()
    assert [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None] == []
    # the zero-weighted use changes no number: a batch without them still gets the null embeddings
    conditioner, cond = model.conditioner, batch_conditioning(batch)
    assert torch.equal(
        conditioner._context(cond, []), conditioner.null_context.expand(2, cond.num_frames, -1)
    )
    like = torch.zeros(2, 32)
    assert torch.equal(conditioner._speaker(cond, like), conditioner.null_speaker.expand_as(like))


# ----- DDP == one process, on the real tasks -----
@pytest.mark.slow
def test_ddp_preset_trains_the_dit_recipe_like_one_process(
    world: dict[str, Path], dit_ddp: dict[str, Any], tmp_path: Path
) -> None:
    """The reported hang: demo_dit + trainer=ddp, masked spans on some ranks' batches and not others'."""
    output = dit_ddp["output"]
    assert "Starting with 2 processes" in output and "distributed_backend=gloo" in output
    one = tmp_path / "one"
    train(
        compose_config(
            reference(*dit_overrides(world, one / "run", STEPS), *probes(one / "losses", POISON_STEP))
        )
    )
    got, want = read_rank_losses(dit_ddp["root"] / "losses"), read_rank_losses(one / "losses")
    assert_same_losses(got, want)
    assert [int(torch.tensor(row).isnan().sum()) for row in got] == [0, 1]  # rank 1's NaN at step 12
    (step, weights), (ref_step, ref_weights) = final_state(dit_ddp["root"] / "run"), final_state(one / "run")
    difference = max_difference(weights, ref_weights)
    print(
        f"DiT: DDP x2 vs one process, {STEPS} steps: max |dw| = {difference:.3g} ({dit_ddp['seconds']:.0f} s)"
    )
    assert step == ref_step == STEPS and difference <= WEIGHT_TOLERANCE
    skips = torch.load(dit_ddp["root"] / "run" / "checkpoints" / "last.ckpt", weights_only=True)[
        "refrain_dit"
    ]
    assert skips["nonfinite_skips"] == 1  # rank 1's NaN dropped the update on both ranks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(overrides: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python trainer.py`` in the background (output to ``log``: a pipe would tie us to every child)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "NODE_RANK"))}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), clean.get("PYTHONPATH", "")])
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, str(REPO / "trainer.py"), *overrides],
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**clean, "PYTHONUNBUFFERED": "1", **SINGLE_THREAD, **(env or {})},
        )


@pytest.mark.slow
def test_the_vae_on_two_loopback_nodes_matches_one_process_and_skips_together(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """Two one-process "nodes" (trainer=multinode, over ddp.yaml) vs one batch of two; a NaN on rank 1.

    Before the fix the VAE failed at step 0 (its two backward passes each leave half the parameters
    unused) and, past that, rank 1 skipped the NaN step alone while rank 0 waited in the all-reduce.
    """
    run, port = tmp_path / "nodes", str(free_port())
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "NUM_NODES": "2"}
    args = [
        *vae_overrides(world, run / "run", STEPS),
        *probes(run / "losses", 8, "degraded"),
        "trainer=multinode",
        "trainer.strategy.timeout.seconds=60",
    ]
    logs = [tmp_path / f"node{r}.log" for r in (0, 1)]
    started = time.time()
    nodes = [launch(args, logs[r], env={**common, "NODE_RANK": str(r)}) for r in (0, 1)]
    for node, log in zip(nodes, logs, strict=True):
        node.wait(timeout=180)
        assert node.returncode == 0, log.read_text()[-4000:]
    seconds = time.time() - started
    outputs = [log.read_text() for log in logs]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    one = tmp_path / "one"
    train(
        compose_config(
            [
                *vae_overrides(world, one / "run", STEPS),
                *probes(one / "losses", 8, "degraded"),
                "data.batch_size=2",
            ]
        )
    )
    ranks = read_rank_losses(run / "losses")
    mean = [[(a + b) / 2 for a, b in zip(*ranks, strict=True)]]
    single = [
        [float.fromhex(line.split(",")[1]) for line in (one / "losses" / "rank0.csv").read_text().split()]
    ]
    assert len(single[0]) == STEPS + 1  # 20 generator steps and the skipped one
    assert_same_losses(mean, single)
    assert single[0][-1] < single[0][0]  # it learns
    (step, weights), (ref_step, ref_weights) = final_state(run / "run"), final_state(one / "run")
    difference = max_difference(weights, ref_weights)
    print(
        f"VAE: 2 loopback nodes vs one process, {STEPS} steps: max |dw| = {difference:.3g} ({seconds:.0f} s)"
    )
    assert step == ref_step == STEPS and difference <= WEIGHT_TOLERANCE
    state = torch.load(run / "run" / "checkpoints" / "last.ckpt", weights_only=True)["refrain_vae"]
    assert state["nonfinite_skips"] == 1


@pytest.mark.slow
def test_ddp_preset_trains_a_lora_like_one_process(world: dict[str, Path], tmp_path: Path) -> None:
    """text2sample (PEFT, lora_dropout) over a DiT bundle: only the adapters are reduced, in step."""
    run, one = tmp_path / "ddp", tmp_path / "one"
    started = time.time()
    run_cli(ddp(*lora_overrides(world, run / "run", STEPS), *probes(run / "losses")), tmp_path / "log")
    seconds = time.time() - started
    train(compose_config(reference(*lora_overrides(world, one / "run", STEPS), *probes(one / "losses"))))
    assert_same_losses(read_rank_losses(run / "losses"), read_rank_losses(one / "losses"))
    (step, weights), (ref_step, ref_weights) = final_state(run / "run"), final_state(one / "run")
    assert weights and all(".lora_" in name for name in weights)  # the checkpoint holds the adapters only
    difference = max_difference(weights, ref_weights)
    print(f"LoRA: DDP x2 vs one process, {STEPS} steps: max |dw| = {difference:.3g} ({seconds:.0f} s)")
    assert step == ref_step == STEPS and difference <= WEIGHT_TOLERANCE


# ----- a dying rank, and exact resume -----
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_when_rank_0_dies_rank_1_exits_and_the_resumed_run_repeats_the_losses(
    world: dict[str, Path], dit_ddp: dict[str, Any], tmp_path: Path
) -> None:
    """Rank 0 (the launcher, the checkpoint writer) calls os._exit at step 7; rank 1 must not hang. The run
    resumed from step 5 on 2 ranks draws each rank's noise and items as the uninterrupted run did."""
    stamp, pids, killed = tmp_path / "died_at", tmp_path / "pids", tmp_path / "killed"
    args = ddp(*dit_overrides(world, tmp_path / "run", STEPS), *probes(killed, POISON_STEP))
    process = launch(
        [
            *args,
            "+callbacks.pid._target_=helpers.resilience_toys.PidFile",
            f"+callbacks.pid.folder={pids}",
            "+callbacks.die._target_=helpers.resilience_toys.KillAt",
            "+callbacks.die.step=7",
            "+callbacks.die.rank=0",
            "+callbacks.die.exit_code=1",
            f"+callbacks.die.stamp={stamp}",
        ],
        tmp_path / "log",
    )
    while not stamp.exists() and process.poll() is None:
        time.sleep(0.2)
    assert stamp.exists(), (tmp_path / "log").read_text()[-3000:]
    survivor = int((pids / "rank1").read_text())
    deadline = float(stamp.read_text()) + DEAD_RANK_BOUND_S
    while _alive(survivor) and time.time() < deadline:
        time.sleep(0.1)
    exited_after, hung = time.time() - float(stamp.read_text()), _alive(survivor)
    if hung:
        os.kill(survivor, 9)
    process.wait(timeout=30)
    print(f"rank 0 died at step 7; rank 1 was gone {exited_after:.1f} s later")
    assert not hung, f"rank 1 still running {DEAD_RANK_BOUND_S} s after rank 0 died"
    assert process.returncode != 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 5
    resumed = tmp_path / "resumed"
    run_cli(
        [
            *ddp(*dit_overrides(world, tmp_path / "run", STEPS), *probes(resumed, POISON_STEP)),
            f"ckpt_path={checkpoint}",
        ],
        tmp_path / "resume.log",
    )
    straight = read_rank_losses(dit_ddp["root"] / "losses")
    assert_same_losses(read_rank_losses(resumed), [row[5:] for row in straight], tolerance=0.0)
    (step, weights), straight_weights = final_state(tmp_path / "run"), final_state(dit_ddp["root"] / "run")[1]
    assert step == STEPS and max_difference(weights, straight_weights) == 0.0  # last.ckpt is the newest state


# ----- bf16 and the presets (one process) -----
def test_bf16_mixed_on_cpu_trains_the_tiny_dit_with_finite_losses(tmp_path: Path) -> None:
    task = DiTTask(tiny_dit_model(), ema=partial(EMA, decay=0.99), plotter=SamplePlotter(tmp_path))
    dtypes: list[torch.dtype] = []
    linear = next(m for m in task.model.blocks[0].modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(
        max_steps=4,
        precision="bf16-mixed",
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, DiTBatches(count=4))
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert set(dtypes) == {torch.bfloat16}  # autocast really ran the block's matmuls in bf16
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in task.model.parameters())
    assert task.nonfinite_skips == 0


def test_presets_compose_and_read_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nodes_from_env({"SLURM_JOB_NUM_NODES": "4"}) == 4
    assert nodes_from_env({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) == 2  # torchrun
    assert nodes_from_env({}) == 1
    assert devices_from_env({"SLURM_NTASKS_PER_NODE": "8(x2)"}) == 8
    assert devices_from_env({"LOCAL_WORLD_SIZE": "4"}) == 4
    assert devices_from_env({}) == "auto"
    ddp_preset = compose_config(["trainer=ddp", "trainer.devices=3", "trainer.precision=bf16-mixed"]).trainer
    assert (ddp_preset.devices, ddp_preset.precision) == (3, "bf16-mixed")
    strategy = instantiate(ddp_preset.strategy)
    assert type(strategy).__name__ == "DDPStrategy" and strategy._timeout.total_seconds() == 600
    assert strategy._ddp_kwargs["find_unused_parameters"] is False  # every task uses every parameter
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    multinode = compose_config(["trainer=multinode"]).trainer
    assert (instantiate(multinode.num_nodes), instantiate(multinode.devices)) == (2, 4)
    assert (
        compose_config(["trainer=multinode", "trainer.num_nodes=3"]).trainer.num_nodes == 3
    )  # --num_nodes 3
    fsdp = instantiate(compose_config(["trainer=fsdp"]).trainer.strategy)
    from refrain.training.cluster import BackboneWrapPolicy

    assert "FSDPStrategy" in type(fsdp).__name__ and fsdp._state_dict_type == "full"
    # units come from the backbone's BackboneSpec.fsdp_wrap (tests/training/test_fsdp_policy.py)
    assert isinstance(fsdp.kwargs["auto_wrap_policy"], BackboneWrapPolicy)
