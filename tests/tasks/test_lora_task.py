"""LoRA training: every variant trains a few steps on a small multitrack dataset built here, checkpoints
hold only the trainable tensors, PEFT adapter folders load onto the base with plain PEFT, resume works,
the reference path learns, and ACE-Step's trainer flags route to all of it."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.bundles import FAST_DIT, FAST_VAE, perturbed_state, save_vae
from helpers.multitrack import write_songs
from lightning.pytorch.callbacks import ModelCheckpoint
from peft import PeftModel
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from refrain.bundles.dit import open_dit_bundle, save_dit_bundle, text_encoder_ref
from refrain.data.conditioning_encoder import EncodeSettings
from refrain.data.multitrack import prepare_multitrack
from refrain.data.options import LoaderOptions, OnlineEncoding
from refrain.errors import RefrainInputError
from refrain.lora.config import load_lora_spec, parse_lora_spec
from refrain.lora.control import attach_control
from refrain.lora.data import LoraDataModule
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.tasks.dit_task import FlowValidation, batch_conditioning
from refrain.tasks.lora_task import LoraTask

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("lyric2vocal", "text2sample", "rapmachine", "stemgen", "singing2accompaniment")
DIT = {**FAST_DIT, "lyric_vocab_size": 256}  # the LoRA base, with room for the dataset's vocabulary
STEPS = 40
SMALL = {"r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16, "control_layers": 1}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prepared multitrack dataset and a base DiT bundle (tiny VAE, the dataset's vocabulary)."""
    root = tmp_path_factory.mktemp("lora_world")
    prepare_multitrack(
        write_songs(root / "songs", count=4, seconds=1.6), root / "ds", val_fraction=0.3, progress=False
    )
    save_vae(root / "vae", FAST_VAE)
    save_dit_bundle(
        root / "base",
        perturbed_state(DIT, 1),
        DIT,
        root / "vae",
        root / "ds" / "phoneme_vocab.json",
        text_encoder_ref(None, 32),
        {"model": {"dit": DIT}},
    )
    return {"root": root, "dataset": root / "ds", "bundle": root / "base"}


def small_spec(variant: str, source: str = "x.json"):
    raw = load_lora_spec(REPO / "lora_configs" / f"{variant}.json").to_dict()
    raw.update(r=SMALL["r"], lora_alpha=SMALL["lora_alpha"])
    if raw["conditioning"].get("instruments"):
        raw["conditioning"].update(SMALL["conditioning"])
    return parse_lora_spec(raw, source)


def datamodule(world: dict[str, Path], spec: Any) -> LoraDataModule:
    return LoraDataModule(
        spec,
        dataset_path=str(world["dataset"]),
        vae_bundle=str(world["bundle"] / "vae"),
        batch_size=2,
        max_frames=24,
        val_items=2,
        storage=EncodeSettings(tag_shuffles=2, text_max_length=32),
        online=OnlineEncoding(use_cache=False),
        loader=LoaderOptions(num_workers=0),
    )


def base_model(world: dict[str, Path]) -> torch.nn.Module:
    return open_dit_bundle(world["bundle"]).build_model()


def make_task(world: dict[str, Path], spec: Any, run_dir: Path, **options: Any) -> LoraTask:
    settings: dict[str, Any] = {
        "loss": FlowMatchingLoss(masked_span_prob=0.0),
        "optimizer": partial(torch.optim.AdamW, lr=1e-2),
        "validation": FlowValidation(bins=2),
        "run_dir": run_dir,
        "dataset_path": str(world["dataset"]),
    }
    settings.update(options)
    return LoraTask(base_model(world), spec, base_bundle=str(world["bundle"]), **settings)


def fit(task: LoraTask, dm: Any, run_dir: Path, steps: int, ckpt_path: str | None = None) -> pl.Trainer:
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", every_n_train_steps=2, save_last=True, save_top_k=-1
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        callbacks=[checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=2,
        limit_val_batches=1,
        check_val_every_n_epoch=None,
        default_root_dir=run_dir,
    )
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_and_exports_a_peft_adapter(
    world: dict[str, Path], tmp_path: Path, variant: str
) -> None:
    spec = small_spec(variant)
    dm = datamodule(world, spec)
    task = make_task(world, spec, tmp_path)
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or "reference_control" in n for n in trainable)
    assert any("reference_control" in n for n in trainable) == (spec.control is not None)
    before = {n: p.detach().clone() for n, p in task.named_parameters() if not p.requires_grad}
    trainer = fit(task, dm, tmp_path, steps=2)
    assert trainer.global_step == 2 and task.nonfinite_skips == 0
    assert all(torch.equal(p, before[n]) for n, p in task.named_parameters() if n in before)  # base frozen
    # the selection: rap by tags, vocals stems, stem pairs
    counts = {"lyric2vocal": 2, "text2sample": 4, "rapmachine": 2, "stemgen": 16, "singing2accompaniment": 4}
    assert 1 <= dm.selected["train"] <= counts[variant] and dm.selected["validation"] >= 1
    batch = next(iter(dm.train_dataloader()))
    assert ("reference_latent" in batch) == (spec.control is not None)
    if spec.control is not None:
        assert batch["reference_latent"].shape == batch["latent_mean"].shape
        assert batch["instrument"].max() < len(spec.control.instruments)
        assert not torch.equal(batch["reference_latent"], batch["latent_mean"])
    # a checkpoint holds the trainable tensors only, and every checkpoint step has an adapter folder
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(ckpt["state_dict"]) == set(trainable)
    assert ckpt["refrain_lora"]["base"]["bundle_hash"] == open_dit_bundle(world["bundle"]).bundle_hash
    assert (tmp_path / "adapters" / "step_00000002" / "adapter_model.safetensors").is_file()
    final = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "refrain_lora.json"} <= {
        p.name for p in final.iterdir()
    }
    assert json.loads((final / "refrain_lora.json").read_text())["variant"] == variant
    # plain PEFT loads it onto the base DiT and reproduces the trained model
    base = base_model(world)
    if spec.control is not None:
        attach_control(base, spec.control)
    reloaded = PeftModel.from_pretrained(base, str(final))
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    reloaded.eval()
    with task._bound(batch), torch.no_grad():
        cond = task.model.adapt(batch_conditioning(batch))
        x = torch.randn(batch["latent_mean"].shape, generator=torch.Generator().manual_seed(0))
        sigma = torch.full((x.shape[0],), 0.6)
        trained = task.model.model(x, sigma, cond).velocity
        assert torch.allclose(reloaded(x, sigma, cond).velocity, trained, atol=1e-6)


def test_checkpoint_is_small_and_resumes(world: dict[str, Path], tmp_path: Path) -> None:
    spec = small_spec("stemgen")
    task = make_task(world, spec, tmp_path)
    fit(task, datamodule(world, spec), tmp_path, steps=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    base_bytes = (world["bundle"] / "dit.safetensors").stat().st_size
    assert last.stat().st_size < base_bytes  # weights + Adam state of the adapter < the base weights alone
    state = torch.load(last, weights_only=True)
    assert state["optimizer_states"][0]["state"]  # Adam moments travel with it
    resumed = make_task(world, spec, tmp_path / "resume")
    trainer = fit(resumed, datamodule(world, spec), tmp_path / "resume", steps=3, ckpt_path=str(last))
    assert trainer.global_step == 3
    lora = "model.model.base_model.model.blocks.0.attn.to_q.lora_B.default.weight"
    assert not torch.equal(resumed.state_dict()[lora], state["state_dict"][lora])  # it went on training
    other = make_task(world, small_spec("rapmachine"), tmp_path / "other")
    with pytest.raises(RefrainInputError, match="not a checkpoint of this LoRA set-up"):
        other.on_load_checkpoint(state)
    moved = {**state, "refrain_lora": {"base": {"bundle_hash": "f" * 64}}}
    with pytest.raises(RefrainInputError, match="trained on base bundle ffffffffffff"):
        resumed.on_load_checkpoint(moved)


def _fixed_batch(seed: int = 0) -> dict[str, Any]:
    """One collated stem batch: the target is a fixed function of the reference, so the path can learn it."""
    g = torch.Generator().manual_seed(seed)
    b, c, t = 4, 4, 16
    reference = torch.randn(b, c, t, generator=g)
    mixing = torch.randn(c, c, generator=g)
    return {
        "latent_mean": torch.einsum("dc,bct->bdt", mixing, reference).tanh(),
        "latent_std": torch.full((b, c, t), 0.01),
        "frame_mask": torch.ones(b, t, dtype=torch.bool),
        "lyrics": torch.zeros(b, t, dtype=torch.long),
        "style": torch.randn(b, 3, 8, generator=g),
        "style_mask": torch.ones(b, 3, dtype=torch.bool),
        "teacher_features": {},
        "teacher_masks": {},
        "keys": list("abcd"),
        "prompts": [""] * b,
        "lyrics_text": [""] * b,
        "crop_start": torch.zeros(b),
        "reference_latent": reference,
        "reference_mask": torch.ones(b, 1, t),
        "instrument": torch.tensor([0, 1, 0, 1]),
    }


def test_the_reference_path_learns_what_lora_alone_cannot(tmp_path: Path) -> None:
    """Same budget, same data: with the reference path the loss falls well below the LoRA-only run."""
    losses = {}
    for variant in ("stemgen", "text2music"):
        torch.manual_seed(0)
        base = DiffusionTransformer(
            DiTConfig(
                latent_channels=4,
                hidden_size=32,
                num_layers=2,
                num_heads=4,
                intermediate_size=64,
                text_dim=8,
                lyric_vocab_size=16,
                lyric_dim=8,
                lyric_conv_layers=1,
                repa_layer=1,
                zero_init_output=False,
            )
        )
        control = {"instruments": ["a", "b"], "control_width": 32, "drop_reference_prob": 0.0}
        spec = parse_lora_spec(
            {
                "variant": variant,
                "r": 4,
                "lora_alpha": 4,
                **({"conditioning": control} if variant == "stemgen" else {}),
            }
        )
        loss = FlowMatchingLoss(masked_span_prob=0.0, drop_style_prob=0.0, drop_lyrics_prob=0.0)
        task = LoraTask(
            base, spec, loss=loss, optimizer=partial(torch.optim.AdamW, lr=1e-2), run_dir=tmp_path / variant
        )
        batch = _fixed_batch()
        loader = DataLoader([batch] * STEPS, batch_size=None, collate_fn=lambda x: x)
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=STEPS,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = float(task.binned_validation(batch)["flow"])
        trainer.fit(task, train_dataloaders=loader)
        task.eval()
        losses[variant] = (start, float(task.binned_validation(batch)["flow"]))
    (start, stem), (_, plain) = losses["stemgen"], losses["text2music"]
    assert stem < 0.6 * start and stem < 0.8 * plain, losses


def test_trainer_flags_route_to_a_lora_run_whose_cfg_job_is_the_config_it_trains(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ACE-Step's flags alone compose the LoRA run in Hydra: `--cfg job --resolve` prints exactly the
    config the run's checkpoints store (nothing is patched after composition)."""
    import yaml

    from refrain.cli.train import main
    from refrain.config import compose_config

    spec_file = tmp_path / "l2v.json"
    spec_file.write_text(json.dumps(small_spec("lyric2vocal").to_dict()))
    argv = [
        "--checkpoint_dir",
        str(world["bundle"]),
        "--lora_config_path",
        str(spec_file),
        "--dataset_path",
        str(world["dataset"]),
        "--exp_name",
        "l2v",
        "--max_steps",
        "2",
        "--num_workers",
        "0",
        "--every_n_train_steps",
        "2",
        "--every_plot_step",
        "2",
        f"run_dir={tmp_path / 'run'}",
        "logger=csv",
        "callbacks.progress=null",
        "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
        "+trainer.limit_val_batches=1",
    ]
    main([*argv, "--cfg", "job", "--resolve"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["task"]["_target_"] == "refrain.tasks.lora_task.LoraTask"
    assert (
        printed["vae_bundle"] == str(world["bundle"] / "vae")
        and printed["data"]["storage"]["text_max_length"] == 32
    )
    main(argv)
    assert "run folder:" in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["refrain"]["config"] == printed
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert saved and all(".lora_" in k for k in saved)
    assert (
        tmp_path / "run" / "plots" / "step_000002" / "spectrograms.png"
    ).is_file()  # decoded with the base's VAE
    with pytest.raises(SystemExit):
        main(["--lora_config_path", str(spec_file), "--dataset_path", "x"])
    assert "needs the base DiT bundle" in capsys.readouterr().err
    assert compose_config([f"lora_config_path={spec_file}"]).task.get("lora_config_path") == str(
        spec_file
    )  # the Hydra spelling selects the lora group too
