"""LoRA training data: the DiT datamodule with a variant's record selection and reference pairing.

Selection (``data`` in the LoRA JSON) keeps records by tags, lyrics and, on a multitrack dataset, role.
A variant with a reference path trains on pairs: each target record (``<target>:<instrument>``) is
cropped together with its song's reference record (``<reference>:<instrument>``) at the same latent
frames, and the batch gains ``reference_latent`` (B, C, T, posterior mean), ``reference_mask``
(B, 1, T) and ``instrument`` (B,). Everything else (cache, online fallback, crops, prompt variants,
skip-and-count) is ``DiTDataModule``'s.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from torch.utils.data import DataLoader

from refrain.data.collate import collate_dit
from refrain.data.crops import choose_crop
from refrain.data.dit_dataset import LOAD_ERRORS, DiTDataModule, DiTDataset
from refrain.data.multitrack import MultitrackLayout, read_layout
from refrain.data.resumable_sampler import split_key
from refrain.errors import RefrainInputError
from refrain.lora.config import LoraSpec, load_lora_spec
from refrain.lora.variants import DataSelection

log = logging.getLogger(__name__)
_DATASET_ARGS = [p for p in inspect.signature(DiTDataset.__init__).parameters if p not in ("self", "records")]


def _words(tag: str) -> str:
    return " " + re.sub(r"[^0-9a-z]+", " ", tag.lower()).strip() + " "


def tag_matches(tags: Sequence[str], wanted: Sequence[str]) -> bool:
    """True when a wanted tag occurs in one of ``tags`` as whole words ("rap" in "gangsta rap", not "trap")."""
    words = [_words(t) for t in tags]
    return any(_words(w) in t for w in wanted for t in words)


def keep_record(record: Mapping[str, Any], selection: DataSelection) -> bool:
    tags = list(record.get("tags") or [])
    if selection.include_tags and not tag_matches(tags, selection.include_tags):
        return False
    if selection.exclude_tags and tag_matches(tags, selection.exclude_tags):
        return False
    return not (selection.require_lyrics and not record.get("phoneme_ids"))


def select_indices(
    split: Dataset, spec: LoraSpec, layout: MultitrackLayout | None, present: Container[str] = ()
) -> tuple[list[int], list[tuple[str, int]]]:
    """Indices of the records a LoRA trains on, and for a paired variant (reference key, label) of each.

    ``present``: keys of every record in the dataset (a pair whose reference preparation skipped is left out).
    """
    roles = layout.roles_by_key() if layout is not None else {}
    columns = split.select_columns(["keys", "tags", "phoneme_ids"])
    indices: list[int] = []
    pairs: list[tuple[str, int]] = []
    control = spec.control
    if control is not None and layout is None:
        raise RefrainInputError(
            spec.source,
            f"variant {spec.variant} trains on stem pairs but the dataset has no multitrack.json",
            "prepare it with `refrain-prepare-multitrack --input SONGS --output DATASET`",
        )
    wanted_roles = set(spec.data.roles) or {"mix"}
    for index, record in enumerate(columns):
        if not keep_record(record, spec.data):
            continue
        song_role = roles.get(record["keys"])
        if control is not None:
            assert layout is not None
            if song_role is None:
                continue
            song, role = song_role
            family, _, instrument = role.partition(":")
            if family != control.target or instrument not in control.instruments:
                continue
            ref_role = "mix" if control.reference == "mix" else f"{control.reference}:{instrument}"
            reference = layout.songs[song].get(ref_role)
            if reference is None or reference not in present:
                continue
            indices.append(index)
            pairs.append((reference, control.label(instrument)))
        elif layout is None or (song_role is not None and song_role[1] in wanted_roles):
            indices.append(index)
    return indices, pairs


def _tag_summary(split: Dataset, limit: int = 12) -> str:
    counts = Counter(t for tags in split["tags"] for t in tags)
    return ", ".join(f"{t} ({n})" for t, n in counts.most_common(limit)) or "(no tags)"


class PairedDiTDataset(DiTDataset):
    """DiT crops of target records plus the same frames of each one's reference record."""

    def __init__(self, records: Any, references: Any, labels: Sequence[int], **kwargs: Any) -> None:
        super().__init__(records, **kwargs)
        self.references = references
        self.labels = list(labels)

    def __getitem__(self, key: int) -> dict[str, Any] | None:
        _, index = split_key(key, len(self))  # a resumable sampler may count keys across epochs
        record, reference = self.records[index], self.references[index]
        try:
            entry, ref_entry = self.entry(record), self.entry(reference)
            rng = self._generator(index)
            frames = min(entry.num_frames, ref_entry.num_frames)
            crop = choose_crop(frames, self.max_frames, self.frame_rate, None if self.deterministic else rng)
            item = self.item(entry, record, crop, int(rng.integers(entry.num_variants)))
            item["reference_latent"], _ = ref_entry.latent(crop.start, crop.start + crop.frames)
            item["instrument"] = self.labels[index]
            return item
        except LOAD_ERRORS as err:
            log.warning("skipping %s (reference %s): %s", record.get("keys"), reference.get("keys"), err)
            with self.failures.get_lock():
                self.failures.value += 1
            return None


def collate_paired(items: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """``collate_dit`` plus the reference latent padded like the target, its mask and the labels."""
    batch = collate_dit(items)
    good = [item for item in items if item is not None]
    if not good or "reference_latent" not in good[0]:
        return batch
    b, c, t = batch["latent_mean"].shape
    reference = torch.zeros(b, c, t)
    for i, item in enumerate(good):
        ref = item["reference_latent"]
        reference[i, :, : ref.shape[-1]] = ref
    batch["reference_latent"] = reference
    batch["reference_mask"] = batch["frame_mask"][:, None].to(reference.dtype)
    batch["instrument"] = torch.tensor([int(item["instrument"]) for item in good], dtype=torch.long)
    return batch


class LoraDataModule(DiTDataModule):
    """``DiTDataModule`` narrowed to the records (or stem pairs) one LoRA JSON selects."""

    def __init__(self, lora_config_path: str | LoraSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = (
            lora_config_path if isinstance(lora_config_path, LoraSpec) else load_lora_spec(lora_config_path)
        )
        self.selected: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.selected:
            return
        super().setup(stage)
        from refrain.data.schema import load_prepared

        assert self.train_set is not None and self.val_set is not None
        splits = load_prepared(self.dataset_path)
        layout = read_layout(self.dataset_path)
        train = splits["train"]
        val = splits["validation"] if len(splits["validation"]) else train
        everything = concatenate_datasets([splits["train"], splits["validation"]])
        position = {key: i for i, key in enumerate(everything["keys"])}
        chosen = {
            name: select_indices(part, self.spec, layout, position)
            for name, part in (("train", train), ("validation", val))
        }
        if not chosen["train"][0]:
            raise RefrainInputError(
                self.spec.source,
                f"selects no training record of {self.dataset_path}",
                f"loosen data.include_tags/exclude_tags/roles; the dataset's tags: {_tag_summary(train)}",
            )
        sources = {"train": train, "validation": val}
        if not chosen["validation"][0]:
            log.warning(
                "LoRA %s: no validation record selected; validating on training records", self.spec.variant
            )
            chosen["validation"], sources["validation"] = chosen["train"], train
        built: dict[str, DiTDataset] = {}
        for name, template in (("train", self.train_set), ("validation", self.val_set)):
            indices, pairs = chosen[name]
            if name == "validation" and self.val_items:
                indices, pairs = indices[: int(self.val_items)], pairs[: int(self.val_items)]
            args = {k: getattr(template, k) for k in _DATASET_ARGS}
            records = sources[name].select(indices)
            if self.spec.control is not None:
                refs = everything.select([position[key] for key, _ in pairs])
                built[name] = PairedDiTDataset(records, refs, [label for _, label in pairs], **args)
            else:
                built[name] = DiTDataset(records, **args)
            self.selected[name] = len(indices)
        self.train_set, self.val_set = built["train"], built["validation"]
        log.info("LoRA %s data: %s selected records", self.spec.variant, self.selected)

    def train_dataloader(self) -> DataLoader:
        return _with_reference_collate(super().train_dataloader())

    def val_dataloader(self) -> DataLoader:
        return _with_reference_collate(super().val_dataloader())


def _with_reference_collate(loader: DataLoader) -> DataLoader:
    """The DiT loader, collating the reference latents of paired items too (plain items are unchanged)."""
    loader.collate_fn = collate_paired
    return loader
