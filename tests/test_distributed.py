"""Scaling out on CPU with gloo: DDP over two processes, two one-process "nodes" on 127.0.0.1, a rank that
dies, bf16-mixed; the presets compose. Tests marked gpu repeat bf16 / DDP / FSDP on CUDA where present."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers.resilience_toys import DiTBatches, tiny_dit_model, toy_config
from hydra.utils import instantiate

from refrain.config import compose_config
from refrain.tasks.dit_task import DiTTask
from refrain.training.cluster import devices_from_env, nodes_from_env
from refrain.training.dit_plotting import SamplePlotter
from refrain.training.ema import EMA
from refrain.training.run import train

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "helpers" / "resilience_toys.py"
# Deterministic toy (no dropout, no loss noise, no input noise): 32 items, 8 steps = 2 epochs.
TOY = ["trainer.max_steps=8", "every_n_train_steps=4", "task.noisy=false", "task.dropout=0.0", "data.size=32",
       "data.noise=0.0"]  # fmt: skip
# Measured on this machine: DDP and two-node final weights differ from one process by <= 6e-8.
WEIGHT_TOLERANCE = 1e-6
DEAD_RANK_BOUND_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run the toy driver; output goes to ``log`` (a pipe would tie the caller to every child process)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "NODE_RANK"))}
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, str(DRIVER), *args], cwd=REPO, env={**clean, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=handle, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


def finish(process: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8
    return checkpoint["state_dict"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The reference: one process, global batch 8."""
    run = tmp_path_factory.mktemp("single")
    train(toy_config(run, *TOY, "data.batch_size=8"))
    return final_weights(run)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(
    tmp_path: Path, single_process: dict[str, torch.Tensor]
) -> None:
    run = tmp_path / "ddp"
    log = tmp_path / "log"
    output = finish(
        launch(f"run_dir={run}", "trainer=ddp", "trainer.devices=2", *TOY, "data.batch_size=4", log=log), log
    )
    assert "Starting with 2 processes" in output and "distributed_backend=gloo" in output
    difference = max_difference(final_weights(run), single_process)
    print(f"DDP x2 vs one process: max |dw| = {difference:.3g}")
    assert difference <= WEIGHT_TOLERANCE


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_process(
    tmp_path: Path, single_process: dict[str, torch.Tensor]
) -> None:
    run, port = tmp_path / "nodes", str(free_port())
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "NUM_NODES": "2"}
    logs = [tmp_path / f"node{r}.log" for r in (0, 1)]
    nodes = [
        launch(f"run_dir={run}", "trainer=multinode", *TOY, "data.batch_size=4", log=logs[r],
               env={**common, "NODE_RANK": str(r)})
        for r in (0, 1)
    ]  # fmt: skip
    outputs = [finish(node, log) for node, log in zip(nodes, logs, strict=True)]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    difference = max_difference(final_weights(run), single_process)
    print(f"2 nodes x 1 process vs one process: max |dw| = {difference:.3g}")
    assert difference <= WEIGHT_TOLERANCE


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.parametrize("dying", [1, 0])
def test_when_a_rank_dies_the_other_exits_within_a_bound(tmp_path: Path, dying: int) -> None:
    """Rank ``dying`` calls os._exit(1) at step 3; the surviving rank must not hang in its collective."""
    stamp, pids, log = tmp_path / "died_at", tmp_path / "pids", tmp_path / "log"
    process = launch(
        f"run_dir={tmp_path / 'run'}", "trainer=ddp", "trainer.devices=2", "trainer.max_steps=50", "data.size=400",
        "+callbacks.pid._target_=helpers.resilience_toys.PidFile", f"+callbacks.pid.folder={pids}",
        "+callbacks.die._target_=helpers.resilience_toys.KillAt", "+callbacks.die.step=3", f"+callbacks.die.rank={dying}",
        "+callbacks.die.exit_code=1", f"+callbacks.die.stamp={stamp}", log=log,
    )  # fmt: skip
    while not stamp.exists() and process.poll() is None:
        time.sleep(0.2)
    assert stamp.exists(), log.read_text()[-3000:]
    survivor = int((pids / f"rank{1 - dying}").read_text())
    deadline = float(stamp.read_text()) + DEAD_RANK_BOUND_S
    while _alive(survivor) and time.time() < deadline:
        time.sleep(0.1)
    exited_after = time.time() - float(stamp.read_text())
    hung = _alive(survivor)
    if hung:
        os.kill(survivor, 9)
    process.wait(timeout=30)
    output = log.read_text()
    print(f"rank {dying} died; rank {1 - dying} was gone {exited_after:.1f} s later")
    assert not hung, f"rank {1 - dying} still running {DEAD_RANK_BOUND_S} s after rank {dying} died"
    assert process.returncode != 0, output[-2000:]
    assert "finished at step" not in output


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
        max_steps=4, precision="bf16-mixed", accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()], default_root_dir=tmp_path,
    )  # fmt: skip
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
    ddp = compose_config(["trainer=ddp", "trainer.devices=3", "trainer.precision=bf16-mixed"]).trainer
    assert (ddp.devices, ddp.precision) == (3, "bf16-mixed")
    strategy = instantiate(ddp.strategy)
    assert type(strategy).__name__ == "DDPStrategy" and strategy._timeout.total_seconds() == 600
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    multinode = compose_config(["trainer=multinode"]).trainer
    assert (instantiate(multinode.num_nodes), instantiate(multinode.devices)) == (2, 4)
    assert (
        compose_config(["trainer=multinode", "trainer.num_nodes=3"]).trainer.num_nodes == 3
    )  # --num_nodes 3
    fsdp = instantiate(compose_config(["trainer=fsdp"]).trainer.strategy)
    from refrain.models.dit.blocks import DiTBlock

    assert type(fsdp).__name__ == "SafeFSDPStrategy" and fsdp._state_dict_type == "full"
    assert fsdp.kwargs["auto_wrap_policy"]._module_classes == {DiTBlock}


# ----- CUDA (skipped without a GPU) -----
@pytest.mark.gpu
def test_bf16_mixed_on_cuda_trains_the_tiny_dit(tmp_path: Path) -> None:
    task = DiTTask(tiny_dit_model(), ema=partial(EMA, decay=0.99), plotter=SamplePlotter(tmp_path))
    trainer = pl.Trainer(
        max_steps=6, precision="bf16-mixed", accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(task, DiTBatches(count=6))
    assert trainer.global_step == 6 and task.nonfinite_skips == 0
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


@pytest.mark.gpu
@pytest.mark.slow
def test_ddp_on_cuda_matches_one_process(tmp_path: Path, single_process: dict[str, torch.Tensor]) -> None:
    devices = min(2, torch.cuda.device_count())
    run, log = tmp_path / "ddp", tmp_path / "log"
    finish(launch(f"run_dir={run}", "trainer=ddp", f"trainer.devices={devices}", "trainer.accelerator=gpu",
                  *TOY, f"data.batch_size={8 // devices}", log=log), log)  # fmt: skip
    difference = max_difference({k: v.cpu() for k, v in final_weights(run).items()}, single_process)
    print(f"DDP x{devices} on CUDA vs one CPU process: max |dw| = {difference:.3g}")
    assert difference <= 1e-4  # TF32 / cuBLAS vs CPU arithmetic


@pytest.mark.gpu
@pytest.mark.slow
def test_fsdp_preset_trains_and_resumes_on_cuda(tmp_path: Path) -> None:
    run, log = tmp_path / "fsdp", tmp_path / "log"
    finish(launch(f"run_dir={run}", "trainer=fsdp", "trainer.devices=1", "trainer.accelerator=gpu", *TOY,
                  "data.batch_size=8", log=log), log)  # fmt: skip
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
