"""LoRA fine-tuning of a base DiT bundle: the DiT task with a frozen base and PEFT adapters.

Everything about the objective (flow matching, CFG dropout, REPA, non-finite skips, validation bins,
listening plots) is ``DiTTask``'s. This subclass only:

- wraps the base in PEFT (``refrain.lora.inject_lora``) and the variant's conditioning rules
  (``refrain.lora.model.AdaptedDiT``) before the DiT task sees it, so only adapter (and reference-path)
  parameters require gradients and reach the optimiser;
- binds each batch's reference latent and instrument for the variants that have a reference path;
- keeps checkpoints small: the base's frozen tensors are left out of ``state_dict`` (they live in the
  base bundle, whose hash the checkpoint records and resume checks);
- writes a standard PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors`` +
  ``refrain_lora.json``) at every checkpoint (``<run_dir>/adapters/step_<8-digit step>``) and at the end
  (``<run_dir>/adapter``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.lora.adapters import save_adapter
from refrain.lora.config import LoraSpec, load_lora_spec
from refrain.lora.inject import inject_lora
from refrain.lora.model import AdaptedDiT, base_facts, check_vocab_extends
from refrain.tasks.dit_task import DiTTask


class LoraTask(DiTTask):
    """``DiTTask`` over ``AdaptedDiT(PEFT(base))``; ``model`` is the frozen base DiT (from its bundle)."""

    def __init__(
        self,
        model: nn.Module,
        lora_config_path: str | Path | LoraSpec,
        base_bundle: str | Path | None = None,
        run_dir: str | Path = "exps/lora",
        adapter_dir: str | Path | None = None,
        **dit_task_options: Any,
    ) -> None:
        spec = (
            lora_config_path if isinstance(lora_config_path, LoraSpec) else load_lora_spec(lora_config_path)
        )
        model.requires_grad_(False)
        adapted = AdaptedDiT(inject_lora(model, spec), spec.null_lyrics, spec.control)
        super().__init__(adapted, **dit_task_options)
        self.spec = spec
        self.base_bundle = str(base_bundle) if base_bundle else None
        self.base = base_facts(model, self.base_bundle)
        self.lora_run_dir = Path(run_dir)
        self.adapter_dir = Path(adapter_dir) if adapter_dir else self.lora_run_dir / "adapter"
        self.strict_loading = (
            False  # checkpoints hold the trainable tensors only; the base comes from its bundle
        )
        self._adapter_steps: set[int] = set()
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        rank_zero_info(
            f"LoRA {spec.variant}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_vocab_extends(self.base_bundle, self.dataset_path)

    # ----- the reference inputs of a batch -----
    @contextmanager
    def _bound(self, batch: Mapping[str, Any]) -> Iterator[None]:
        with ExitStack() as stack:
            for model in {id(m): m for m in (self.model, self.sampling_model())}.values():
                if isinstance(model, AdaptedDiT):
                    stack.enter_context(model.batch_inputs(batch))
            yield

    def conditioning(self, batch: Mapping[str, Any]) -> Any:
        """The DiT task's conditioning; a reference-path batch also names each item's instrument and the
        generated role, which a backbone that reads the reference itself puts in its prompt (ACE-Step 1.5)."""
        control = self.spec.control
        if control is not None and "instrument" in batch:
            names = [control.instruments[int(i)] for i in batch["instrument"].tolist()]
            batch = {**batch, "instrument_names": names, "reference_target": control.target}
        return super().conditioning(batch)

    def compute_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        with self._bound(batch):
            return super().compute_loss(batch)

    def binned_validation(self, batch: Mapping[str, Any], batch_idx: int = 0) -> dict[str, Tensor]:
        with self._bound(batch):
            return super().binned_validation(batch, batch_idx)

    def plot(self, step: int, fallback: Mapping[str, Any] | None = None) -> Path | None:
        """The DiT task's listening plots, with the plotted batch's reference inputs bound."""
        source = None
        if self._trainer is None or self.trainer.is_global_zero:
            source = self._plot_source(fallback)
        if source is None:
            return super().plot(step, fallback)
        batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in source.items()}
        with self._bound(batch):
            return super().plot(step, fallback)

    # ----- small checkpoints, adapter folders -----
    def frozen_keys(self) -> set[str]:
        """state_dict keys of the frozen base (live model and EMA copy): what a checkpoint leaves out."""
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        modules = [("model.", self.model)] + (
            [("ema.shadow.", self.ema.shadow)] if self.ema is not None else []
        )
        return {
            prefix + name
            for prefix, module in modules
            for name in module.state_dict()
            if name not in trainable
        }

    def adapter_model(self) -> nn.Module:
        """The PEFT model whose adapter is exported (the EMA copy when training keeps one)."""
        model = self.sampling_model()
        assert isinstance(model, AdaptedDiT)
        return model.model

    def write_adapter(self, folder: str | Path) -> Path | None:
        if self._trainer is not None and not self.trainer.is_global_zero:
            return None
        facts = {**self.base, "global_step": int(self.global_step)}
        return save_adapter(self.adapter_model(), folder, self.spec, facts)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        frozen = self.frozen_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint["refrain_lora"] = {"spec": self.spec.to_dict(), "base": self.base}
        if self.global_step not in self._adapter_steps:
            self._adapter_steps.add(self.global_step)
            self.write_adapter(self.lora_run_dir / "adapters" / f"step_{self.global_step:08d}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("refrain_lora") or {}
        recorded = (saved.get("base") or {}).get("bundle_hash")
        if recorded and self.base.get("bundle_hash") and recorded != self.base["bundle_hash"]:
            raise RefrainInputError(
                "ckpt_path",
                f"the checkpoint was trained on base bundle {recorded[:12]}, not {self.base['bundle_hash'][:12]}",
                "resume with the --checkpoint_dir the run started from",
            )
        expected = set(self.state_dict()) - self.frozen_keys()
        got = set(checkpoint.get("state_dict") or {})
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        if missing or unexpected:
            raise RefrainInputError(
                "ckpt_path",
                f"not a checkpoint of this LoRA set-up (missing {missing[:2]}, unexpected {unexpected[:2]})",
                "resume with the same --lora_config_path, or start a new run",
            )
        super().on_load_checkpoint(checkpoint)

    def on_train_end(self) -> None:
        super().on_train_end()
        folder = self.write_adapter(self.adapter_dir)
        if folder is not None:
            rank_zero_info(f"LoRA adapter written to {folder}")
