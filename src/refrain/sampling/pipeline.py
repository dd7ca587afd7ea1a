"""The inference pipeline over an exported DiT bundle: one method per mode, each returning a song and
the sidecar that regenerates it.

    pipe = Pipeline.from_bundle("exps/demo/bundle")
    song = pipe.text2music("dreamy synth pop", lyrics="[verse]\\nhello night", duration=30.0)
    song.save("song.flac")                      # + song.json (the sidecar)
    again = pipe.regenerate(song.sidecar)       # the same samples, bit for bit on the same CPU set-up

The latent math is ``refrain.sampling``'s (solvers, guidance, retake/repaint/extend/audio2audio,
FlowEdit); the shared parts (conditioning, seeds, chunked VAE codec, sidecar) are ``SamplingEngine``'s.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from refrain.bundles.dit import open_dit_bundle
from refrain.errors import RefrainInputError
from refrain.models.dit.conditioning import DiTConditioning
from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.flowedit import FLOWEDIT_PRESETS, flowedit
from refrain.sampling.modes import audio2audio, extend, extend_latent, frame_mask, repaint, retake_noise
from refrain.sampling.options import SamplerOptions
from refrain.sampling.sidecar import check_sidecar, read_sidecar, resolve_identity
from refrain.sampling.solvers import sample
from refrain.sampling.song import LyricsLayout, SongRequest, SongResult
from refrain.sampling.splice import splice_extend, splice_repaint

SOURCE_MODES = ("repaint", "extend", "edit", "audio2audio", "stem", "accompany")
Layout = LyricsLayout | Mapping[str, Any] | None


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

    # ----- text2music and retake -----
    def text2music(
        self,
        prompt: str = "",
        lyrics: str = "",
        duration: float = 30.0,
        *,
        layout: Layout = None,
        options: SamplerOptions | None = None,
    ) -> SongResult:
        """A song from a style prompt, lyrics (LRC, or structured text laid out at ``layout.bpm``) and seconds."""
        fields = asdict(LyricsLayout.from_any(layout))
        return self.text2music_batch([SongRequest(prompt, lyrics, duration, **fields)], options)[0]

    def text2music_batch(
        self, requests: Sequence[SongRequest | Mapping[str, Any]], options: SamplerOptions | None = None
    ) -> list[SongResult]:
        """Several songs in one batch (padded to the longest); song i uses its seed or ``options.seed + i``."""
        return self._text2music(requests, (options or SamplerOptions()).resolved())

    def retake(
        self, source: Mapping[str, Any] | str | Path, variance: float = 0.5, *, seed: int | None = None
    ) -> SongResult:
        """A variation of a text2music song given by its sidecar: cos/sin mix of its noise with new noise
        from ``seed`` (variance 0 gives the song back exactly). Options are the source's."""
        origin = read_sidecar(source) if isinstance(source, str | Path) else dict(source)
        check_sidecar(origin, "retake source")
        if origin["mode"] != "text2music":
            raise RefrainInputError(
                "retake source", f"is a {origin['mode']} song", "retake the sidecar of a text2music song"
            )
        origin = {
            k: origin[k] for k in ("format", "version", "mode", "params", "options", "batch") if k in origin
        }
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        batch = origin.get("batch") or {"index": 0, "requests": [origin["params"]]}
        index = int(batch["index"])
        options = SamplerOptions.from_dict(origin["options"])
        song = self._text2music(batch["requests"], options, (index, variance, seed))[index]
        song.sidecar.update(mode="retake", params={"source": origin, "variance": variance, "seed": seed})
        song.sidecar.pop("batch", None)
        return song

    def _text2music(
        self,
        requests: Sequence[SongRequest | Mapping[str, Any]],
        options: SamplerOptions,
        retake: tuple[int, float, int] | None = None,
    ) -> list[SongResult]:
        """The batch behind text2music and retake; ``retake`` = (song index, variance, new-noise seed)."""
        items = [SongRequest.from_any(r) for r in requests]
        if not items:
            raise RefrainInputError("prompts", "no song requested", "pass at least one prompt")
        base = int(options.seed) if options.seed is not None else 0
        items = [replace(r, seed=base + i if r.seed is None else r.seed) for i, r in enumerate(items)]
        frames = [self.frames_for(r.duration) for r in items]
        total = max(frames)
        timed = [self.timed_lyrics(r.lyrics, r.duration, r.layout) for r in items]
        conds, noises, generators = [], [], []
        for index, (request, lyrics, length) in enumerate(zip(items, timed, frames, strict=True)):
            conds.append(self.conditioning(request.prompt, lyrics, length, total))
            noise, generator = self.noise(int(request.seed), length)
            if retake is not None and retake[0] == index:
                noise = retake_noise(noise, self.noise(retake[2], length)[0], retake[1])
            noises.append(nn.functional.pad(noise, (0, total - length)))
            generators.append(generator)
        velocity = options.guided(self.model, DiTConditioning.cat(conds))
        x = torch.cat(noises).to(self.device)
        callback = self.callback("text2music", options.steps)
        latents = sample(
            velocity, x, options.sigmas(), options.solver, generator=generators[0], callback=callback
        )
        requested = [asdict(r) for r in items]
        songs = []
        for index, (request, lyrics, length) in enumerate(zip(items, timed, frames, strict=True)):
            latent = latents[index : index + 1, :, :length]
            audio = self.decode(latent, round(request.duration * self.sample_rate))
            facts = {"batch": {"index": index, "requests": requested}} if len(items) > 1 else {}
            songs.append(self.result("text2music", requested[index], options, latent, audio, lyrics, **facts))
        return songs

    # ----- modes over a source song -----
    def repaint(
        self,
        source: Source,
        start: float,
        end: float,
        prompt: str = "",
        lyrics: str = "",
        *,
        variance: float = 1.0,
        crossfade: float = 0.1,
        layout: Layout = None,
        options: SamplerOptions | None = None,
    ) -> SongResult:
        """Regenerate [start, end) seconds of a song; every sample outside it (and its crossfade) is kept."""
        options, layout = (options or SamplerOptions()).resolved(), LyricsLayout.from_any(layout)
        audio, identity = self.load_source(source)
        x_src = self.encode(audio)
        frames = x_src.shape[-1]
        mask = frame_mask(frames, start, end, self.frame_rate).to(self.device)
        timed = self.timed_lyrics(lyrics, audio.shape[-1] / self.sample_rate, layout)
        keep = (~mask).to(x_src.dtype)[None, None]
        cond = self.conditioning(prompt, timed, frames, context=x_src * keep, context_mask=keep)
        noise, generator = self.noise(int(options.seed), frames)
        latent = repaint(
            options.guided(self.model, cond), x_src, noise.to(self.device), mask, options.sigmas(), variance,
            options.solver, generator=generator, callback=self.callback("repaint", options.steps),
        )  # fmt: skip
        generated = self.decode(latent, frames * self.vae.hop_length)
        song = splice_repaint(audio, generated, start, end, self.sample_rate, crossfade)
        params = {
            "source": identity, "start": start, "end": end, "prompt": prompt, "lyrics": lyrics,
            "variance": variance, "crossfade": crossfade, "layout": asdict(layout),
        }  # fmt: skip
        return self.result("repaint", params, options, latent, song, timed)

    def extend(
        self,
        source: Source,
        left: float = 0.0,
        right: float = 0.0,
        prompt: str = "",
        lyrics: str = "",
        *,
        crossfade: float = 0.1,
        layout: Layout = None,
        options: SamplerOptions | None = None,
    ) -> SongResult:
        """Add ``left``/``right`` seconds around a song (lyric times count from the new start)."""
        options, layout = (options or SamplerOptions()).resolved(), LyricsLayout.from_any(layout)
        audio, identity = self.load_source(source)
        x_src = self.encode(audio)
        left_frames, right_frames = round(left * self.frame_rate), round(right * self.frame_rate)
        padded, mask = extend_latent(x_src, left_frames, right_frames)
        frames = padded.shape[-1]
        timed = self.timed_lyrics(lyrics, frames / self.frame_rate, layout)
        keep = (~mask).to(x_src.dtype)[None, None]
        cond = self.conditioning(prompt, timed, frames, context=padded, context_mask=keep)
        noise, generator = self.noise(int(options.seed), frames)
        latent = extend(
            options.guided(self.model, cond), x_src, noise.to(self.device), left_frames, right_frames,
            options.sigmas(), options.solver, generator=generator, callback=self.callback("extend", options.steps),
        )  # fmt: skip
        generated = self.decode(latent, frames * self.vae.hop_length)
        song = splice_extend(audio, generated, left_frames * self.vae.hop_length, self.sample_rate, crossfade)
        params = {
            "source": identity, "left": left, "right": right, "prompt": prompt, "lyrics": lyrics,
            "crossfade": crossfade, "layout": asdict(layout),
        }  # fmt: skip
        return self.result("extend", params, options, latent, song, timed)

    def edit(
        self,
        source: Source,
        source_prompt: str = "",
        source_lyrics: str = "",
        target_prompt: str | None = None,
        target_lyrics: str | None = None,
        *,
        preset: str = "only_lyrics",
        n_min: float | None = None,
        n_max: float | None = None,
        n_avg: int | None = None,
        layout: Layout = None,
        options: SamplerOptions | None = None,
    ) -> SongResult:
        """FlowEdit from the source's prompt/lyrics to the target's (None = unchanged), keeping what they share.

        Presets: ``only_lyrics`` (edit the noisiest 40% of steps: new words, same song) and ``remix``
        (n_min 0.2, n_max 0.4: a new arrangement around the same material); n_min/n_max/n_avg override.
        """
        if preset not in FLOWEDIT_PRESETS:
            raise RefrainInputError(
                "edit preset", f"unknown preset {preset!r}", f"use one of {', '.join(FLOWEDIT_PRESETS)}"
            )
        chosen = FLOWEDIT_PRESETS[preset]
        n_min, n_max = (chosen.n_min if n_min is None else n_min), (chosen.n_max if n_max is None else n_max)
        n_avg = chosen.n_avg if n_avg is None else n_avg
        options, layout = (options or SamplerOptions()).resolved(), LyricsLayout.from_any(layout)
        target_prompt = source_prompt if target_prompt is None else target_prompt
        target_lyrics = source_lyrics if target_lyrics is None else target_lyrics
        audio, identity = self.load_source(source)
        x_src = self.encode(audio)
        frames, seconds = x_src.shape[-1], audio.shape[-1] / self.sample_rate
        timed_src = self.timed_lyrics(source_lyrics, seconds, layout)
        timed_tar = self.timed_lyrics(target_lyrics, seconds, layout)
        v_src = options.guided(self.model, self.conditioning(source_prompt, timed_src, frames))
        v_tar = options.guided(self.model, self.conditioning(target_prompt, timed_tar, frames))
        generator = torch.Generator().manual_seed(int(options.seed))
        latent = flowedit(
            v_src, v_tar, x_src, options.sigmas(), n_min, n_max, n_avg, options.solver,
            generator=generator, callback=self.callback("edit", options.steps),
        )  # fmt: skip
        song = self.decode(latent, audio.shape[-1])
        params = {
            "source": identity, "source_prompt": source_prompt, "source_lyrics": source_lyrics,
            "target_prompt": target_prompt, "target_lyrics": target_lyrics, "preset": preset,
            "n_min": n_min, "n_max": n_max, "n_avg": n_avg, "layout": asdict(layout),
        }  # fmt: skip
        return self.result("edit", params, options, latent, song, timed_tar)

    def audio2audio(
        self,
        source: Source,
        strength: float = 0.5,
        prompt: str = "",
        lyrics: str = "",
        *,
        layout: Layout = None,
        options: SamplerOptions | None = None,
    ) -> SongResult:
        """Sample from the reference song noised to sigma 1 - strength (1 keeps it, 0 ignores it)."""
        options, layout = (options or SamplerOptions()).resolved(), LyricsLayout.from_any(layout)
        audio, identity = self.load_source(source)
        z_ref = self.encode(audio)
        frames = z_ref.shape[-1]
        timed = self.timed_lyrics(lyrics, audio.shape[-1] / self.sample_rate, layout)
        noise, generator = self.noise(int(options.seed), frames)
        latent = audio2audio(
            options.guided(self.model, self.conditioning(prompt, timed, frames)), z_ref, noise.to(self.device),
            options.sigmas(), strength, options.solver, generator=generator,
            callback=self.callback("audio2audio", options.steps),
        )  # fmt: skip
        song = self.decode(latent, audio.shape[-1])
        params = {
            "source": identity,
            "strength": strength,
            "prompt": prompt,
            "lyrics": lyrics,
            "layout": asdict(layout),
        }
        return self.result("audio2audio", params, options, latent, song, timed)

    # ----- LoRA reference modes (refrain.lora.sampling: a stemgen / singing2accompaniment adapter) -----
    def stem(
        self, source: Source, instrument: str, prompt: str = "", lyrics: str = "", *,
        layout: Layout = None, options: SamplerOptions | None = None,
    ) -> SongResult:  # fmt: skip
        """StemGen: ``instrument``'s stem that fits ``source`` (the song without that stem)."""
        from refrain.lora.sampling import stem_song

        return stem_song(self, source, instrument, prompt, lyrics, layout=layout, options=options)

    def accompany(
        self, source: Source, prompt: str = "", lyrics: str = "", *, instrument: str = "vocals",
        layout: Layout = None, options: SamplerOptions | None = None,
    ) -> SongResult:  # fmt: skip
        """singing2accompaniment: the accompaniment that fits the vocal stem ``source``."""
        from refrain.lora.sampling import accompany_song

        return accompany_song(self, source, prompt, lyrics, instrument, layout=layout, options=options)

    # ----- regeneration -----
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
                "sidecar bundle", f"the song was made with bundle {recorded[:12]}, this one is {self.bundle_hash[:12]}",
                "load the bundle the sidecar names, or allow another bundle explicitly",
            )  # fmt: skip
        mode, params = data["mode"], dict(data["params"])
        options = SamplerOptions.from_dict(data["options"])
        if mode == "text2music":
            batch = data.get("batch") or {"index": 0, "requests": [params]}
            return self._text2music(batch["requests"], options)[int(batch["index"])]
        if mode == "retake":
            return self.retake(params["source"], params["variance"], seed=params["seed"])
        if mode not in SOURCE_MODES:
            raise RefrainInputError("sidecar mode", f"unknown mode {mode!r}", "use a sidecar refrain wrote")
        params["source"] = resolve_identity(params["source"], "source audio")
        return getattr(self, mode)(**params, options=options)
