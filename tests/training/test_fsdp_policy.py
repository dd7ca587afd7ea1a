"""trainer=fsdp wraps the blocks the run's backbone declares (BackboneSpec.fsdp_wrap), with no override.

Sharded training needs GPUs; these tests check what FSDP wraps: the preset's policy asked for its targets on
a module holding each backbone, as FSDP asks it at wrap time, and torch's FSDP itself wrapping with that
policy in a one-process gloo group on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.models.transformers.ace_step_transformer import AceStepTransformerBlock
from helpers.ace15 import write_tiny_release
from helpers.diffrhythm import tiny_diffrhythm
from hydra.utils import instantiate
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from refrain.config import compose_config
from refrain.models.dit.blocks import DiTBlock
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.training.cluster import BackboneWrapPolicy


def _targets(overrides: list[str], model: nn.Module) -> dict[type, int]:
    strategy = instantiate(compose_config(["trainer=fsdp", *overrides]).trainer.strategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, BackboneWrapPolicy)
    task = nn.ModuleDict({"model": model, "head": nn.Linear(2, 2)})  # FSDP gets the task, not the backbone
    counts: dict[type, int] = {}
    for module in policy._run_policy(task, set(), {}):
        counts[type(module)] = counts.get(type(module), 0) + 1
    return counts


def _dit() -> nn.Module:
    return DiffusionTransformer(
        DiTConfig(
            latent_channels=4,
            hidden_size=32,
            num_layers=3,
            num_heads=4,
            intermediate_size=64,
            text_dim=6,
            lyric_vocab_size=20,
            lyric_dim=16,
            lyric_conv_layers=1,
            repa_layer=1,
        )
    )


def _ace15(tmp: Path) -> nn.Module:
    from refrain.models.backbones.ace15 import load_ace15

    return load_ace15(write_tiny_release(tmp / "release"), repa_layer=1)


@pytest.mark.parametrize(
    ("build", "block", "count"),
    [("dit", DiTBlock, 3), ("ace15", AceStepTransformerBlock, 4), ("diffrhythm", LlamaDecoderLayer, 4)],
)
def test_fsdp_preset_wraps_the_backbones_declared_blocks(
    tmp_path: Path, build: str, block: type, count: int
) -> None:
    torch.manual_seed(0)
    model = {
        "dit": _dit,
        "ace15": lambda: _ace15(tmp_path),
        "diffrhythm": lambda: tiny_diffrhythm(perturb=0),
    }[build]()
    assert sum(isinstance(m, block) for m in model.modules()) == count
    assert _targets([], model) == {block: count}


def test_torch_fsdp_wraps_each_declared_block_as_one_unit(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if dist.is_initialized():
        pytest.skip("a process group is already running in this test process")
    strategy = instantiate(compose_config(["trainer=fsdp"]).trainer.strategy)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        task = nn.ModuleDict({"model": tiny_diffrhythm(perturb=0), "head": nn.Linear(2, 2)})
        wrapped = FSDP(
            task,
            auto_wrap_policy=strategy.kwargs["auto_wrap_policy"],
            device_id=torch.device("cpu"),
            use_orig_params=True,
        )
        units = [type(m.module).__name__ for m in wrapped.modules() if isinstance(m, FSDP)]
    finally:
        dist.destroy_process_group()
    assert units == ["ModuleDict"] + ["LlamaDecoderLayer"] * 4  # the root, then one unit per block


def test_fsdp_preset_follows_a_lora_wrapped_backbone() -> None:
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(tiny_diffrhythm(perturb=0), LoraConfig(r=2, target_modules=["q_proj"]))
    assert _targets([], peft) == {LlamaDecoderLayer: 4}


def test_named_classes_replace_the_backbones_choice() -> None:
    names = "trainer.strategy.auto_wrap_policy.names=[transformers.models.llama.modeling_llama.LlamaMLP]"
    counts = _targets([names], tiny_diffrhythm(perturb=0))
    assert [c.__name__ for c in counts] == ["LlamaMLP"] and sum(counts.values()) == 4
