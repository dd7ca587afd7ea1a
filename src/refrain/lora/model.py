"""The adapted DiT: a base (plain, PEFT-wrapped or merged) plus its variant's conditioning rules.

``AdaptedDiT`` is a ``VelocityModel`` like the base, so the DiT task, the sampler and a merged bundle
all drive it unchanged. It applies what a variant fixes about the conditioning: text2sample's lyrics are
always the learned null embedding (on a backbone without a lyrics-only drop, its ``null_lyrics(cond)``:
ACE-Step 1.5's empty lyric prompt); a reference-path variant gets its reference latent and instrument
label (as a ``ControlConditioning``), and during training drops the reference for a share of samples so
guidance can use it.

Training batches carry the reference next to the latent; the DiT task builds its conditioning from a
batch without knowing about it, so ``LoraTask`` binds a batch's reference inputs for the duration of one
loss / validation / sampling call (``batch_inputs``), and the model joins them to the conditioning it is
handed (repeated when guidance stacks several passes of the same batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.lora.control import ControlConditioning, attach_control
from refrain.lora.variants import ControlSpec
from refrain.models.backbone import backbone_of, require
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.velocity import VelocityOutput
from refrain.text.vocab import VOCAB_FILE


@dataclass
class ReferenceInputs:
    """A batch's reference latent (B, C, T), its mask (B, 1, T) and instrument labels (B,)."""

    reference: Tensor
    reference_mask: Tensor
    instrument: Tensor

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> ReferenceInputs | None:
        if "reference_latent" not in batch:
            return None
        reference = batch["reference_latent"]
        mask = batch.get("reference_mask")
        if mask is None:
            mask = batch["frame_mask"][:, None].to(reference.dtype)
        return cls(reference, mask.to(reference.dtype), batch["instrument"].long())

    def join(self, cond: Any) -> Any:
        """``cond`` with these inputs; a batch of k stacked passes gets them k times. A backbone that reads
        a reference track itself (ACE-Step 1.5) gets it as its conditioning's ``reference``; its instrument
        is already named in the prompt the batch was encoded with."""
        b = self.reference.shape[0]
        if cond.batch_size % b:
            raise RefrainInputError(
                "reference inputs",
                f"batch of {b} does not divide the conditioning batch {cond.batch_size}",
                "bind the reference of the same batch the conditioning was built from",
            )
        k = cond.batch_size // b
        device = cond.frame_mask.device
        tile = lambda t: t.to(device).repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731
        t = cond.num_frames
        if not isinstance(cond, DiTConditioning):
            return replace(cond, reference=tile(self.reference[..., :t]).to(cond.frame_mask.device))
        return ControlConditioning.from_plain(
            cond,
            reference=tile(self.reference[..., :t]),
            reference_mask=tile(self.reference_mask[..., :t]),
            instrument=tile(self.instrument),
        )


class AdaptedDiT(nn.Module):
    """A DiT with its LoRA variant's conditioning rules; forwards everything else to ``model``."""

    def __init__(
        self, model: nn.Module, null_lyrics: bool = False, control: ControlSpec | None = None
    ) -> None:
        super().__init__()
        if null_lyrics and not hasattr(backbone_of(model), "null_lyrics"):  # say so before training starts
            require(model, "lyrics", "conditioning.null_lyrics", "use a variant that keeps the lyrics")
        self.model = model
        self.null_lyrics = bool(null_lyrics)
        self.control = control
        self._inputs: ReferenceInputs | None = None

    @property
    def latent_channels(self) -> int:
        return int(self.model.latent_channels)

    @property
    def hidden_size(self) -> int:
        return int(self.model.hidden_size)

    @property
    def conditioner(self) -> nn.Module:
        """The base's condition embedder (the sampler checks it for a context input)."""
        return self.model.conditioner

    @contextmanager
    def batch_inputs(self, batch: Mapping[str, Any]) -> Iterator[None]:
        """Join ``batch``'s reference inputs to every conditioning this model sees inside the block."""
        self._inputs = ReferenceInputs.from_batch(batch) if self.control is not None else None
        if self.control is not None and self._inputs is None:
            raise RefrainInputError(
                "LoRA batch",
                "a reference-path variant got a batch without reference_latent/instrument",
                "train it with refrain.lora.data.LoraDataModule on a multitrack dataset",
            )
        try:
            yield
        finally:
            self._inputs = None

    def adapt(self, cond: DiTConditioning) -> DiTConditioning:
        if self.null_lyrics:  # a backbone without a lyrics-only drop (ACE-Step 1.5) says what null lyrics are
            backbone = backbone_of(self.model)
            if hasattr(backbone, "null_lyrics"):
                cond = backbone.null_lyrics(cond)
            else:
                cond = replace(cond, drop_lyrics=torch.ones_like(cond.drop_lyrics))
        native = not isinstance(cond, DiTConditioning)  # the backbone's own reference input (ACE-Step 1.5)
        joined = getattr(cond, "reference", None) is not None
        if self._inputs is not None and not isinstance(cond, ControlConditioning) and not joined:
            cond = self._inputs.join(cond)
        droppable = isinstance(cond, ControlConditioning) or (
            native and getattr(cond, "reference", None) is not None
        )
        if self.training and self.control is not None and droppable:
            drop = (
                torch.rand(cond.batch_size, device=cond.frame_mask.device) < self.control.drop_reference_prob
            )
            if native:  # the release's input without a reference is its text2music context
                cond = replace(cond, drop_context=cond.drop_context | drop)
            else:
                cond = replace(cond, drop_reference=cond.drop_reference | drop)
        return cond

    def forward(
        self, x: Tensor, sigma: Tensor, cond: DiTConditioning, return_hidden: bool = False
    ) -> VelocityOutput:
        return self.model(x, sigma, self.adapt(cond), return_hidden=return_hidden)


def load_base_dit(
    path: str | Path, device: str = "cpu", dataset_path: str | Path | None = None, timbre: str = "silence"
) -> nn.Module:
    """The frozen base DiT of a bundle (``--checkpoint_dir``), weights checked against the manifest.

    ``timbre``: an ACE-Step 1.5 release's timbre reference (``silence`` or ``song``, see ``ace15_timbre``).
    """
    from refrain.bundles.dit import open_dit_bundle

    if not path:
        raise RefrainInputError(
            "checkpoint_dir",
            "not set",
            "pass --checkpoint_dir BASE_BUNDLE (a DiT bundle from refrain-export)",
        )
    from refrain.models.backbones.ace15 import is_release_folder, load_ace15

    if is_release_folder(path):  # a released ACE-Step 1.5 folder in diffusers' layout
        return load_ace15(path, dataset_path=dataset_path, timbre=timbre).to(device)  # caches there
    if timbre != "silence":
        raise RefrainInputError(
            "task.model.timbre", f"{timbre!r} needs an ACE-Step 1.5 release base", "leave it at silence"
        )
    return open_dit_bundle(path).build_model(device)


def build_adapted_dit(
    base: Mapping[str, Any], null_lyrics: bool = False, control: Mapping[str, Any] | None = None
) -> AdaptedDiT:
    """Constructor a merged bundle names: the base DiT (+ the reference path) wrapped in its variant rules."""
    from refrain.bundles.dit import build_from_spec

    spec = {**base, "gradient_checkpointing": False} if "gradient_checkpointing" in base else dict(base)
    dit = build_from_spec(spec)
    control_spec = None
    if control is not None:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in control.items()}
        control_spec = ControlSpec(**values)
        attach_control(dit, control_spec)
    return AdaptedDiT(dit, null_lyrics, control_spec)


def base_facts(model: nn.Module, bundle: str | Path | None) -> dict[str, Any]:
    """What an adapter records about the base it was trained on (checked again on resume and load)."""
    facts: dict[str, Any] = {
        "latent_channels": int(model.latent_channels),
        "hidden_size": int(getattr(model, "hidden_size", 0)),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    from refrain.models.backbones.ace15 import is_release_folder

    if bundle and is_release_folder(bundle):  # a release folder has no manifest: its path is the record
        facts.update(bundle=str(Path(bundle).resolve()), bundle_hash="")
    elif bundle:
        from refrain.bundles.dit import read_dit_manifest

        manifest = read_dit_manifest(bundle)
        facts.update(bundle=str(Path(bundle).resolve()), bundle_hash=str(manifest.get("bundle_hash", "")))
    return facts


def check_vocab_extends(bundle: str | Path | None, dataset_path: str | Path | None) -> None:
    """The dataset's phoneme ids must mean what they meant when the base was trained (same prefix)."""
    if not bundle or not dataset_path:
        return
    from refrain.text.vocab import PhonemeVocab

    base_file, data_file = Path(bundle) / VOCAB_FILE, Path(dataset_path) / VOCAB_FILE
    if not base_file.is_file() or not data_file.is_file():
        return
    base, data = PhonemeVocab.load(base_file).tokens, PhonemeVocab.load(data_file).tokens
    if data[: len(base)] == base:
        return
    index = next(
        (i for i, (a, b) in enumerate(zip(base, data, strict=False)) if a != b), min(len(base), len(data))
    )
    got = data[index] if index < len(data) else "(end)"
    raise RefrainInputError(
        data_file,
        f"phoneme id {index} is {got!r} here but {base[index]!r} in the base bundle",
        f"copy {base_file} into the dataset folder before refrain-prepare (multitrack prep: --base_bundle) and prepare again",
    )
