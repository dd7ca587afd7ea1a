"""One app session: the bundle's pipelines (per LoRA selection), the queue and the history of results.

Pipelines are cached per adapter selection (adapter folders and scales, scale 0 = off), at most two at a
time, so moving a slider back and forth does not reload the bundle each time; a selection's pipeline is
made exactly as ``refrain-infer --lora A:S`` makes it, so its songs and sidecars are the same. Requests run
one at a time (Gradio's queue holds the rest); a running one can be cancelled between sampler steps.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from refrain.app.forms import SOURCE_MODES, call_of
from refrain.errors import RefrainInputError

Selection = tuple[tuple[str, float], ...]


class Cancelled(RuntimeError):
    """Raised from the sampler's progress hook when the user pressed Stop."""


@dataclass
class AppResult:
    """One generated song: its audio, spectrogram and sidecar files, and a label for the history list."""

    label: str
    audio: Path
    spectrogram: Path
    sidecar: Path
    mode: str


@dataclass
class AppSession:
    """Everything the UI calls; usable without Gradio (the tests drive it directly too)."""

    bundle: Path
    output_dir: Path
    adapters: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: torch.dtype | None = None
    torch_compile: bool = False
    default_scales: dict[str, float] = field(default_factory=dict)
    history: list[AppResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _pipes: OrderedDict[Selection, Any] = field(default_factory=OrderedDict)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def selection(self, scales: Mapping[str, float] | None = None) -> Selection:
        """The adapters that are on: (folder, scale) for every scale != 0, in command-line order."""
        scales = scales or {}
        chosen = [
            (path, float(scales.get(path, self.default_scales.get(path, 1.0)))) for path in self.adapters
        ]
        return tuple((p, s) for p, s in chosen if s != 0.0)

    def pipeline(self, selection: Selection) -> Any:
        """The pipeline for an adapter selection (loaded once; the two most recent are kept)."""
        if selection in self._pipes:
            self._pipes.move_to_end(selection)
            return self._pipes[selection]
        import refrain.lora  # noqa: F401  (registers the stem and accompany modes)
        from refrain.sampling.pipeline import Pipeline

        pipe = Pipeline.from_bundle(self.bundle, device=self.device, dtype=self.dtype)
        if selection:
            from refrain.lora.adapters import AdapterRef
            from refrain.lora.sampling import apply_adapters

            apply_adapters(pipe, [AdapterRef(Path(p), s) for p, s in selection])
        if self.torch_compile:
            self._compile(pipe)
        self._pipes[selection] = pipe
        while len(self._pipes) > 2:
            self._pipes.popitem(last=False)
        return pipe

    def _compile(self, pipe: Any) -> None:
        """torch.compile the DiT; where the platform cannot compile, say so once and run eager."""
        from refrain.models.compile import compile_blocks

        note = compile_blocks(pipe.model)
        if note:
            self.notes.append(note)

    def source_of(self, index: int | None, upload: str | None) -> str:
        """The source song of an editing mode: an uploaded file, else a history entry (newest = -1)."""
        if upload:
            return str(upload)
        if not self.history:
            raise RefrainInputError("source", "no song yet", "generate a song first or upload one")
        entry = self.history[-1 if index is None else int(index)]
        return str(entry.audio)

    def cancel(self) -> None:
        self._cancel.set()

    def generate(
        self,
        mode: str,
        form: Mapping[str, Any],
        scales: Mapping[str, float] | None = None,
        source: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> AppResult:
        """Run one tab's request; returns the saved result (appended to the history)."""
        params, options = call_of(mode, form)
        if mode in SOURCE_MODES:
            if not source:
                raise RefrainInputError("source", "none chosen", "pick a song from the history or upload one")
            params["source"] = source
        if mode == "retake":
            params["source"] = str(Path(self.source_of(None, source)).with_suffix(".json"))
        with self._lock:
            self._cancel.clear()
            pipe = self.pipeline(self.selection(scales))

            def report(_mode: str, done: int, total: int) -> None:
                if self._cancel.is_set():
                    raise Cancelled("cancelled")
                if progress is not None:
                    progress(done, total)

            pipe.progress = report
            try:
                if mode == "retake":
                    song = pipe.run(mode, **params)
                else:
                    song = pipe.run(mode, **params, options=options)
            finally:
                pipe.progress = None
        return self._save(mode, song, scales)

    def _save(self, mode: str, song: Any, scales: Mapping[str, float] | None) -> AppResult:
        stamp = time.strftime("%H%M%S")
        index = len(self.history)
        path = self.output_dir / f"{index:03d}_{mode}_{stamp}.flac"
        song.sidecar["app"] = {"adapters": [{"path": p, "scale": s} for p, s in self.selection(scales)]}
        song.save(path, spectrogram=True)
        prompt = str(song.sidecar.get("params", {}).get("prompt", ""))[:40]
        result = AppResult(
            f"#{index} {mode}: {prompt}", path, path.with_suffix(".png"), path.with_suffix(".json"), mode
        )
        self.history.append(result)
        return result

    def history_labels(self) -> Sequence[str]:
        return [entry.label for entry in self.history]
