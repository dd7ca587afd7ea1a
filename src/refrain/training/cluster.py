"""What the trainer presets read from the launcher's environment, and the module classes FSDP wraps.

The conf/trainer presets build ``num_nodes`` and ``devices`` with these functions (Hydra ``_target_``),
so one preset serves torchrun, srun and a plain multi-node launch; ``--num_nodes`` / ``--devices`` on
the command line replace them. Lightning itself detects the cluster environment (TorchElastic, SLURM,
or MASTER_ADDR/MASTER_PORT/NODE_RANK) and checks that these numbers agree with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import get_class
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from refrain.errors import RefrainInputError


def _first_int(value: str | None) -> int | None:
    """SLURM writes counts like ``4`` or ``4(x2)``; take the leading number."""
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


def nodes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """SLURM's node count, torchrun's ``WORLD_SIZE / LOCAL_WORLD_SIZE``, ``NUM_NODES``, else 1."""
    env = os.environ if environ is None else environ
    for key in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES", "NUM_NODES"):
        count = _first_int(env.get(key))
        if count:
            return count
    world, local = _first_int(env.get("WORLD_SIZE")), _first_int(env.get("LOCAL_WORLD_SIZE"))
    if world and local:
        return max(1, world // local)
    return 1


def devices_from_env(environ: Mapping[str, str] | None = None) -> int | str:
    """Processes per node: SLURM's tasks per node, torchrun's ``LOCAL_WORLD_SIZE``, else ``"auto"``."""
    env = os.environ if environ is None else environ
    for key in ("SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE"):
        count = _first_int(env.get(key))
        if count:
            return count
    return "auto"


def module_classes(names: Sequence[str]) -> set[type[nn.Module]]:
    """Import ``names`` (dotted paths) as a set of module classes: FSDP's wrap / checkpointing policy."""
    classes: set[type[nn.Module]] = set()
    for name in names:
        try:
            cls = get_class(name)
        except Exception:  # Hydra raises several types for a bad path
            raise RefrainInputError(
                f"trainer.strategy ({name})",
                "not an importable class",
                "name an nn.Module class by its dotted path",
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise RefrainInputError(
                f"trainer.strategy ({name})", "is not an nn.Module class", "name a layer class"
            )
        classes.add(cls)
    return classes


class BackboneWrapPolicy(ModuleWrapPolicy):
    """FSDP auto-wrap policy whose units are the blocks the run's backbone declares (``spec.fsdp_wrap``).

    The classes are read from the module FSDP wraps, when it wraps it, so one ``trainer=fsdp`` preset
    shards refrain's DiT by ``DiTBlock``, ACE-Step 1.5 by ``AceStepTransformerBlock`` and DiffRhythm by
    ``LlamaDecoderLayer`` without naming any of them in conf/trainer. ``names`` (dotted class paths)
    replaces the backbone's choice when given.
    """

    def __init__(self, names: Sequence[str] | None = None) -> None:
        self._fixed = module_classes(names) if names else None
        super().__init__(self._fixed or ())

    def _run_policy(
        self, root_module: nn.Module, ignored_modules: set[nn.Module], root_kwargs: dict[str, Any]
    ) -> dict[nn.Module, dict[str, Any]]:
        from refrain.models.backbone import fsdp_unit_classes

        self._module_classes = self._fixed or fsdp_unit_classes(root_module)
        self._module_classes_str = str(self._module_classes)
        return super()._run_policy(root_module, ignored_modules, root_kwargs)


def release_process_group() -> None:
    """Destroy the default process group once training has ended.

    Lightning leaves it alive; at interpreter exit its gloo/NCCL threads are then torn down in no fixed
    order and a finished run can abort ("terminate called without an active exception", exit -6), which
    a scheduler reads as a failed job.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
