"""The conditioning cache: frozen-encoder outputs of every record, stored beside the prepared dataset.

Layout::

    <dataset_path>/cache/<fingerprint>/<content_hash>.safetensors   one entry per distinct record
    <dataset_path>/cache/<fingerprint>/index.json                  a summary (the files are the truth)

The fingerprint hashes everything that decides an entry's numbers (the VAE bundle's file hashes, the
text encoder's files and token limit, each teacher's spec and files, the storage settings), so a
different encoder never reads stale entries: it simply gets another folder.

An entry holds the whole song: ``latent_mean``/``latent_std`` (C, N), ``style`` (V, S, D) with
``style_mask`` (V, S) for the V prompt variants, and ``teacher.<name>`` (T, D) per REPA teacher
(stored as int8, its float scales beside it as ``teacher_scale.<name>``: refrain.data.feature_quant).
safetensors memory-maps, so training reads only the crop's slice. Entries are written to a temporary
file and renamed into place, so an interrupted run never leaves half an entry under the final name.

Sizes per minute of audio at float32 (bf16/fp16 halve them, int8 teacher features quarter them): a 64-channel latent at 21.5 frames/s
(mean + std) 0.66 MB; MERT-330M features (1024-d, 75/s) 18.4 MB; mHuBERT-147 (768-d, 50/s) 9.2 MB;
plus, per record, V x S x D x 4 bytes of style embeddings (about 0.1-0.5 MB for all-MiniLM-L6-v2).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from refrain.data.feature_quant import check_scales, read_teacher
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path

CACHE_DIRNAME = "cache"
INDEX_NAME = "index.json"
ENTRY_SUFFIX = ".safetensors"
FORMAT_NAME = "refrain.conditioning_cache"
FORMAT_VERSION = 1
TEACHER_PREFIX = "teacher."
_REQUIRED = ("latent_mean", "latent_std", "style", "style_mask")


class CacheEntryError(RefrainInputError):
    """A cache entry that cannot be used (corrupt, truncated, from another encoder or record)."""


# ----------------------------------------------------------------------------------- fingerprint
def fingerprint_of(identity: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over a JSON description of the encoders and settings."""
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **identity}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- layout
def cache_dir(dataset_path: str | Path, fingerprint: str) -> Path:
    return Path(dataset_path) / CACHE_DIRNAME / fingerprint


def entry_path(folder: str | Path, content_hash: str) -> Path:
    if not content_hash or "/" in content_hash or content_hash.startswith("."):
        raise RefrainInputError(
            "content_hash", f"{content_hash!r} cannot name a cache entry", "prepare the dataset again"
        )
    return Path(folder) / f"{content_hash}{ENTRY_SUFFIX}"


def tensor_checksum(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order (detects flipped bits)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------- entries
@dataclass
class EntryMeta:
    """What an entry says about itself (stored as safetensors string metadata)."""

    content_hash: str
    fingerprint: str
    key: str
    prompts: list[str]
    variant_names: list[str]
    num_samples: int  # audio samples at `sample_rate` that were encoded (before padding to the hop)
    sample_rate: int
    checksum: str = ""

    @property
    def audio_seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "content_hash": self.content_hash,
            "fingerprint": self.fingerprint,
            "key": self.key,
            "prompts": json.dumps(self.prompts, ensure_ascii=False),
            "variant_names": json.dumps(self.variant_names),
            "num_samples": str(self.num_samples),
            "sample_rate": str(self.sample_rate),
            "checksum": self.checksum,
        }

    @classmethod
    def from_strings(cls, data: Mapping[str, str] | None, source: str) -> EntryMeta:
        data = data or {}
        if data.get("format") != FORMAT_NAME or data.get("version") != str(FORMAT_VERSION):
            raise CacheEntryError(
                source, "not a conditioning cache entry of this version", "re-run refrain-encode"
            )
        try:
            return cls(
                content_hash=data["content_hash"],
                fingerprint=data["fingerprint"],
                key=data["key"],
                prompts=list(json.loads(data["prompts"])),
                variant_names=list(json.loads(data["variant_names"])),
                num_samples=int(data["num_samples"]),
                sample_rate=int(data["sample_rate"]),
                checksum=data.get("checksum", ""),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise CacheEntryError(
                source, f"entry metadata unreadable ({err})", "re-run refrain-encode"
            ) from err


class EntryView(ABC):
    """Read access to one encoded record, whole-song tensors sliced on demand.

    Both the cache (``FileEntry``) and the online path (``TensorEntry``) are read through these same
    methods, so a crop taken from either is the same crop.
    """

    meta: EntryMeta

    @abstractmethod
    def _shape(self, name: str) -> tuple[int, ...]:
        """Shape of a stored tensor."""

    @abstractmethod
    def _slice(self, name: str, index: tuple[slice, ...]) -> Tensor:
        """A slice of a stored tensor (only that slice is read)."""

    @abstractmethod
    def names(self) -> list[str]:
        """Names of the stored tensors."""

    @property
    def num_frames(self) -> int:
        return self._shape("latent_mean")[-1]

    @property
    def num_variants(self) -> int:
        return self._shape("style")[0]

    @property
    def teacher_names(self) -> list[str]:
        return sorted(name[len(TEACHER_PREFIX) :] for name in self.names() if name.startswith(TEACHER_PREFIX))

    def teacher_frames(self, name: str) -> int:
        return self._shape(TEACHER_PREFIX + name)[0]

    def latent(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """(C, stop - start) float32 posterior mean and std."""
        cut = (slice(None), slice(start, stop))
        return self._slice("latent_mean", cut).float(), self._slice("latent_std", cut).float()

    def style(self, variant: int) -> Tensor:
        """(S_v, D) float32 hidden states of the variant's real tokens (its padding removed)."""
        hidden = self._slice("style", (slice(variant, variant + 1),))[0].float()
        mask = self._slice("style_mask", (slice(variant, variant + 1),))[0].bool()
        return hidden[mask]

    def teacher(self, name: str, start: int, stop: int) -> Tensor:
        """(stop - start, D) float32 features of one teacher (int8 ones dequantised with their scales)."""
        return read_teacher(self, name, start, stop)

    def check(self, source: str) -> None:
        """Shapes agree with each other; raises CacheEntryError naming the problem."""
        names = set(self.names())
        missing = [name for name in _REQUIRED if name not in names]
        if missing:
            raise CacheEntryError(source, f"entry lacks {', '.join(missing)}", "re-run refrain-encode")
        mean, std = self._shape("latent_mean"), self._shape("latent_std")
        style, mask = self._shape("style"), self._shape("style_mask")
        if len(mean) != 2 or mean != std:
            raise CacheEntryError(source, f"latent mean {mean} / std {std} disagree", "re-run refrain-encode")
        if len(style) != 3 or style[:2] != mask or style[0] != len(self.meta.prompts):
            raise CacheEntryError(
                source, f"style {style} / mask {mask} / prompts disagree", "re-run refrain-encode"
            )
        if problem := check_scales(self):
            raise CacheEntryError(source, problem, "re-run refrain-encode")


class TensorEntry(EntryView):
    """An entry held in memory (what the encoder returns; the online path reads it directly)."""

    def __init__(self, tensors: Mapping[str, Tensor], meta: EntryMeta) -> None:
        self.tensors = dict(tensors)
        self.meta = meta

    def names(self) -> list[str]:
        return list(self.tensors)

    def _shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def _slice(self, name: str, index: tuple[slice, ...]) -> Tensor:
        return self.tensors[name][index]


class FileEntry(EntryView):
    """An entry on disk, memory-mapped: only the requested slices are read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="pt")
            metadata = self._file.metadata()
            self._names = list(self._file.keys())
            self._shapes = {name: tuple(self._file.get_slice(name).get_shape()) for name in self._names}
        except (SafetensorError, OSError) as err:
            raise CacheEntryError(
                self.path, f"unreadable cache entry ({err})", "re-run refrain-encode to redo it"
            ) from err
        self.meta = EntryMeta.from_strings(metadata, str(self.path))

    def names(self) -> list[str]:
        return list(self._names)

    def _shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def _slice(self, name: str, index: tuple[slice, ...]) -> Tensor:
        try:
            return self._file.get_slice(name)[index]
        except (SafetensorError, OSError) as err:
            raise CacheEntryError(
                self.path, f"cannot read {name} ({err})", "re-run refrain-encode to redo it"
            ) from err

    def load_all(self) -> dict[str, Tensor]:
        return {name: self._file.get_tensor(name) for name in self._names}


def write_entry(path: str | Path, entry: TensorEntry) -> int:
    """Write atomically (temporary file in the same folder, then os.replace); returns the file size."""
    path = Path(path)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in entry.tensors.items()}
    entry.meta.checksum = tensor_checksum(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=entry.meta.to_strings())
        sort_header_metadata(tmp)
    return path.stat().st_size


def sort_header_metadata(path: str | Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted, in place, same length.

    safetensors writes ``__metadata__`` in hash-map order, which differs between processes, so the same
    entry encoded by two ranks (or two runs) would differ in its header bytes; sorted, it does not.
    """
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        raw = handle.read(length)
        header = json.loads(raw)
        metadata = header.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
        text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()
        if len(text) > length:  # cannot happen for a header safetensors wrote; keep it as it is then
            return
        handle.seek(8)
        handle.write(text + b" " * (length - len(text)))


def open_entry(
    path: str | Path,
    content_hash: str | None = None,
    fingerprint: str | None = None,
    prompts: list[str] | None = None,
    verify: bool = False,
) -> FileEntry:
    """Open and check an entry: structure, and (when given) its record, encoder and prompts.

    ``verify`` also re-hashes every byte against the stored checksum and refuses NaN/inf values
    (reads the whole file): an entry encoded from bad input has a valid checksum but would poison
    every batch it lands in.
    """
    entry = FileEntry(path)
    source = str(entry.path)
    entry.check(source)
    if content_hash is not None and entry.meta.content_hash != content_hash:
        raise CacheEntryError(source, "entry belongs to another record", "re-run refrain-encode")
    if fingerprint is not None and entry.meta.fingerprint != fingerprint:
        raise CacheEntryError(source, "entry was made by another encoder", "re-run refrain-encode")
    if prompts is not None and entry.meta.prompts != list(prompts):
        raise CacheEntryError(source, "the record's prompt variants changed", "re-run refrain-encode")
    if verify:
        tensors = entry.load_all()
        if tensor_checksum(tensors) != entry.meta.checksum:
            raise CacheEntryError(
                source, "checksum mismatch (corrupt data)", "re-run refrain-encode to redo it"
            )
        check_finite(tensors, source)
    return entry


def check_finite(tensors: Mapping[str, Tensor], source: str) -> None:
    """Raise CacheEntryError naming the tensors that hold NaN/inf values."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CacheEntryError(
            source,
            f"holds NaN/inf values in {', '.join(sorted(bad))}",
            "re-run refrain-encode --verify to redo it",
        )


# ----------------------------------------------------------------------------------- index
def write_index(
    folder: str | Path, description: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]]
) -> Path:
    """index.json: the encoder description and one summary per entry, written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total_seconds = sum(float(e.get("seconds", 0.0)) for e in entries.values())
    total_bytes = sum(int(e.get("bytes", 0)) for e in entries.values())
    data = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **description,
        "entries": dict(sorted(entries.items())),
        "total_audio_seconds": round(total_seconds, 3),
        "total_bytes": total_bytes,
        "bytes_per_audio_minute": round(60.0 * total_bytes / total_seconds) if total_seconds else 0,
    }
    path = folder / INDEX_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def read_index(folder: str | Path) -> dict[str, Any]:
    """The index of a cache folder, {} when absent or unreadable (it is only a summary)."""
    path = Path(folder) / INDEX_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def summarize_entry(entry: EntryView, size: int) -> dict[str, Any]:
    return {
        "key": entry.meta.key,
        "frames": entry.num_frames,
        "seconds": round(entry.meta.audio_seconds, 3),
        "variants": entry.num_variants,
        "bytes": int(size),
    }


def other_fingerprints(dataset_path: str | Path, fingerprint: str) -> Iterable[str]:
    """Cache folders of other encoders beside this dataset (named in a warning when ours is empty)."""
    root = Path(dataset_path) / CACHE_DIRNAME
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != fingerprint)
