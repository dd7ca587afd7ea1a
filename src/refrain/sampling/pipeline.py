"""The inference pipeline over an exported DiT bundle: the registered modes, each returning a song and the
sidecar that regenerates it.

    pipe = Pipeline.from_bundle("exps/demo/bundle")
    song = pipe.text2music("dreamy synth pop", lyrics="[verse]\\nhello night", duration=30.0)
    song.save("song.flac")                      # + song.json (the sidecar)
    again = pipe.regenerate(song.sidecar)       # the same samples, bit for bit on the same CPU set-up

Modes live in ``refrain.sampling.modes`` (one module each, a registry): ``pipe.run("repaint", ...)`` and
``pipe.repaint(...)`` call the same registered function. The latent math is ``refrain.sampling``'s
(solvers, guidance, edits, FlowEdit); the shared parts (conditioning, seeds, chunked VAE codec, sidecar)
are ``SamplingEngine``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from refrain.bundles.dit import open_dit_bundle
from refrain.errors import RefrainInputError
from refrain.sampling.engine import SamplingEngine
from refrain.sampling.modes import get_mode, mode_names
from refrain.sampling.modes.text2music import text2music_batch
from refrain.sampling.options import SamplerOptions
from refrain.sampling.sidecar import check_sidecar, read_sidecar, resolve_identity
from refrain.sampling.song import SongRequest, SongResult


class Pipeline(SamplingEngine):
    """A loaded bundle ready to sample; every mode takes ``options`` (None = defaults, random seed)."""

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        text_encoder_dir: str | Path | None = None,
        verify: bool = True,
    ) -> Pipeline:
        """Open and check a bundle; the text encoder loads on first use, checked against its recorded digest."""
        from refrain.bundles.vae import load_vae_bundle
        from refrain.models.text_encoder import TextEncoder

        bundle = open_dit_bundle(path, verify=verify)
        ref = bundle.text_encoder
        encoder_dir = ref.resolve(text_encoder_dir, verify=verify)
        vae = load_vae_bundle(bundle.vae_path, device=device, verify=False).model  # hashed with the bundle

        def text_encoder() -> TextEncoder:
            return TextEncoder(encoder_dir, max_length=ref.max_length).to(device)

        model = bundle.build_model(device, dtype)
        return cls(model, vae, bundle.load_vocab(), text_encoder, bundle.bundle_hash, bundle.path, device)

    @classmethod
    def from_release(
        cls, path: str | Path, device: str | torch.device = "cpu", turbo: bool | None = None
    ) -> Pipeline:
        """An ACE-Step 1.5 release folder (diffusers' layout) with its own VAE and Qwen3; read offline."""
        from refrain.models.backbones.ace15 import check_release_folder, load_ace15
        from refrain.models.vae.oobleck import OobleckVAE
        from refrain.models.vae.weights import load_autoencoder
        from refrain.text.vocab import PhonemeVocab

        root = check_release_folder(path)
        model = load_ace15(root, turbo=turbo).to(device).eval()
        vae = OobleckVAE(load_autoencoder(root / "vae")).to(device).eval()
        return cls(model, vae, PhonemeVocab(), lambda: None, "", root, device)

    def run(self, mode: str, *args: Any, **params: Any) -> SongResult:
        """Sample with the registered mode ``mode`` (``refrain.sampling.modes``)."""
        return get_mode(mode).run(self, *args, **params)

    def __getattr__(self, name: str) -> Callable[..., SongResult]:
        """``pipe.<mode>(...)`` for every registered mode (``pipe.repaint(...)`` = ``pipe.run("repaint", ...)``)."""
        if name.startswith("_") or name not in mode_names():
            raise AttributeError(f"{type(self).__name__!r} has no attribute or sampler mode {name!r}")
        mode = get_mode(name)
        return lambda *args, **params: mode.run(self, *args, **params)

    def text2music_batch(
        self, requests: Sequence[SongRequest | Mapping[str, Any]], options: SamplerOptions | None = None
    ) -> list[SongResult]:
        """Several songs in one batch (padded to the longest); song i uses its seed or ``options.seed + i``."""
        return text2music_batch(self, requests, (options or SamplerOptions()).resolved())

    def regenerate(
        self, sidecar: Mapping[str, Any] | str | Path, allow_other_bundle: bool = False
    ) -> SongResult:
        """Make a song again from its sidecar (dict or path): same mode, parameters, options and seed.

        Source files must be unchanged (their sha256 is checked) and, unless ``allow_other_bundle``,
        the bundle must be the one the song was made with.
        """
        data = read_sidecar(sidecar) if isinstance(sidecar, str | Path) else dict(sidecar)
        check_sidecar(data)
        recorded = str((data.get("bundle") or {}).get("hash"))
        if recorded != self.bundle_hash and not allow_other_bundle:
            raise RefrainInputError(
                "sidecar bundle",
                f"the song was made with bundle {recorded[:12]}, this one is {self.bundle_hash[:12]}",
                "load the bundle the sidecar names, or allow another bundle explicitly",
            )
        if data["mode"] not in mode_names():
            raise RefrainInputError(
                "sidecar mode",
                f"unknown mode {data['mode']!r}",
                "use a sidecar refrain wrote (LoRA modes need `import refrain.lora`)",
            )
        mode, params = get_mode(data["mode"]), dict(data["params"])
        options = SamplerOptions.from_dict(data["options"])
        if mode.regenerate is not None:
            return mode.regenerate(self, data, options)
        if mode.source:
            params["source"] = resolve_identity(params["source"], "source audio")
        return mode.run(self, **params, **({"options": options} if mode.sampler else {}))
