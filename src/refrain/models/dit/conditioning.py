"""What a DiT is conditioned on, as one batch object, and the module that embeds it.

``DiTConditioning`` is the contract between the data pipeline, the training loss, the sampler and the
backbone. Conventions it fixes:

- ``lyrics`` are frame-aligned phoneme ids at the latent frame rate (0 = no token / padding), as
  DiffRhythm's sentence-level alignment produces them.
- ``context`` is a reference latent; ``context_mask`` is 1 where a frame is *given*. A sample whose
  mask gives no frame is treated exactly like a sample with no context (learned null embedding).
- ``speaker`` rows that are all zero mean "no speaker" and get the learned null speaker embedding, so a
  batch can mix records with and without ``speaker_emb_path`` and the loss can drop speakers per sample.
- The drop flags are classifier-free-guidance switches: the model replaces that input by a learned null
  embedding. ``drop_style`` also drops the speaker (the unconditional branch drops everything, as
  ACE-Step's does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.models.conditioning_batch import DROP_FLAGS, BatchConditioning
from refrain.models.dit.lyrics import LyricEmbedder


@dataclass
class DiTConditioning(BatchConditioning):
    """A batch of conditioning. Shapes: B batch, S prompt tokens, T latent frames.

    ``frame_mask`` defaults to all frames valid and the drop flags to all False.
    """

    style: Tensor  # (B, S, D_text) text-encoder hidden states
    style_mask: Tensor  # (B, S) bool, True = real token
    lyrics: Tensor  # (B, T) long, frame-aligned phoneme ids, 0 = pad
    speaker: Tensor | None = None  # (B, D_speaker); all-zero row = none
    context: Tensor | None = None  # (B, C, T) reference latent
    context_mask: Tensor | None = None  # (B, 1, T), 1 = frame given
    frame_mask: Tensor = field(default=None)  # type: ignore[assignment]  # (B, T) bool, True = valid
    drop_style: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool
    drop_lyrics: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool
    drop_context: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool
    # What the host already knows (Python values, never moved to a device; collate and the loss's CFG
    # draws fill them), so a step on an accelerator needs no device->host read. Hints only: True means
    # known; the tensors above stay the truth (a row dropped on the device alone is still nulled).
    all_frames_valid: bool | None = None  # every frame_mask entry is True (None: not known)
    host_dropped_style: tuple[bool, ...] | None = None  # per row: known to have no style / dropped
    host_dropped_lyrics: tuple[bool, ...] | None = None  # per row: known to drop lyrics

    def __post_init__(self) -> None:
        batch, frames = self.lyrics.shape[0], self.lyrics.shape[-1]
        self.fill_defaults(batch, frames, self.lyrics.device)

    @property
    def batch_size(self) -> int:
        return int(self.lyrics.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.lyrics.shape[-1])

    def known_all_valid(self) -> bool:
        """Every frame valid, known without a device read: the host-side flag, else free on CPU tensors."""
        if self.all_frames_valid is not None:
            return self.all_frames_valid
        return self.frame_mask.device.type == "cpu" and bool(self.frame_mask.all())

    def validate_latent(self, latent: Tensor) -> None:
        """The latent's batch and frame count match this conditioning (shapes only: no device read)."""
        self.check_latent(latent, "crop the latent and the aligned lyrics to the same number of frames")

    def validate(self, latent: Tensor | None = None) -> None:
        """Raise RefrainInputError on inconsistent shapes, so a collate bug names its field."""
        b, t = self.batch_size, self.num_frames
        if latent is not None:
            self.validate_latent(latent)
        expect: dict[str, tuple[int, ...]] = {
            "style": (b, self.style.shape[1], self.style.shape[-1]),
            "style_mask": (b, self.style.shape[1]),
            "frame_mask": (b, t),
            "drop_style": (b,),
            "drop_lyrics": (b,),
            "drop_context": (b,),
        }
        if self.style.dim() != 3:
            expect["style"] = (b, -1, -1)
        if self.context is not None:
            expect["context"] = (b, self.context.shape[1], t)
            expect["context_mask"] = (b, 1, t)
        if self.speaker is not None:
            expect["speaker"] = (b, self.speaker.shape[-1])
        self.check_shapes(expect, "build every conditioning tensor from the same batch and crop")
        has_frames = self.frame_mask.any(dim=1).all()
        if self.frame_mask.device.type != "cpu":  # checked on the device: no host synchronisation per step
            torch._assert_async(has_frames, "DiTConditioning.frame_mask: a sample has no valid frame")
        elif not bool(has_frames):
            raise RefrainInputError(
                "DiTConditioning.frame_mask",
                "a sample has no valid frame",
                "drop empty items in the dataset or collate",
            )

    def with_dropped(
        self, style: bool | None = None, lyrics: bool | None = None, context: bool | None = None
    ) -> DiTConditioning:
        """The mixin's whole-batch drop flags, with the host-side drop hints set to match."""
        out = super().with_dropped(style, lyrics, context)
        b = self.batch_size
        if style is not None:
            out.host_dropped_style = (bool(style),) * b
        if lyrics is not None:
            out.host_dropped_lyrics = (bool(lyrics),) * b
        return out

    @classmethod
    def cat(cls, items: Sequence[DiTConditioning]) -> DiTConditioning:
        """Concatenate along the batch; prompts are right-padded to the longest, missing optionals filled.

        A missing context becomes zeros with an all-zero mask and a missing speaker becomes zero rows,
        which the model treats exactly as "absent" (see the module docstring).
        """
        if not items:
            raise RefrainInputError("DiTConditioning.cat", "empty list", "pass at least one conditioning")
        max_s = max(c.style.shape[1] for c in items)
        styles, masks = [], []
        for c in items:
            pad = max_s - c.style.shape[1]
            styles.append(F.pad(c.style, (0, 0, 0, pad)))
            masks.append(F.pad(c.style_mask, (0, pad), value=False))
        out: dict[str, Tensor | None] = {
            "style": torch.cat(styles),
            "style_mask": torch.cat(masks),
        }
        for name in ("lyrics", "frame_mask", *DROP_FLAGS):
            out[name] = torch.cat([getattr(c, name) for c in items])
        valid = [c.all_frames_valid for c in items]
        out["all_frames_valid"] = False if False in valid else None if None in valid else True  # type: ignore[assignment]
        for name in ("host_dropped_style", "host_dropped_lyrics"):
            hints = [getattr(c, name) for c in items]
            out[name] = None if None in hints else sum(hints, ())  # type: ignore[assignment]
        ref_speaker = next((c.speaker for c in items if c.speaker is not None), None)
        out["speaker"] = None
        if ref_speaker is not None:
            out["speaker"] = torch.cat(
                [
                    c.speaker
                    if c.speaker is not None
                    else ref_speaker.new_zeros(c.batch_size, ref_speaker.shape[1])
                    for c in items
                ]
            )
        ref_ctx = next((c for c in items if c.context is not None), None)
        out["context"] = out["context_mask"] = None
        if ref_ctx is not None:
            ctx, cmask = [], []
            for c in items:
                if c.context is not None:
                    ctx.append(c.context)
                    cmask.append(c.context_mask)
                else:
                    ctx.append(
                        ref_ctx.context.new_zeros(c.batch_size, ref_ctx.context.shape[1], c.num_frames)
                    )
                    cmask.append(ref_ctx.context_mask.new_zeros(c.batch_size, 1, c.num_frames))
            out["context"], out["context_mask"] = torch.cat(ctx), torch.cat(cmask)
        return cls(**out)


def _kept_rows(dropped: Tensor) -> Tensor | None:
    """Indices of the rows that keep an input, or None when every row does (nothing to skip)."""
    keep = (~dropped).nonzero().squeeze(1)
    return None if keep.numel() == dropped.numel() else keep


def _kept(dropped: Tensor, hint: tuple[bool, ...] | None, read_flags: bool) -> tuple[Tensor | None, bool]:
    """(rows to encode, or None for all; whether they come from the host-side hint).

    ``read_flags``: the device flags may be read (free on CPU, once per run in ``prepare``). Otherwise
    the hint (rows the host knows are dropped) picks the rows with no device read; rows dropped on the
    device alone are encoded and then nulled by the caller's ``where``.
    """
    if read_flags:
        return _kept_rows(dropped), False
    if hint is None:
        return None, False
    keep = _kept_rows(torch.tensor(hint, dtype=torch.bool))
    return (None if keep is None else keep.to(dropped.device, non_blocking=True)), True


def _scatter_rows(null: Tensor, keep: Tensor, rows: Tensor, lead: tuple[int, ...] | torch.Size) -> Tensor:
    """(*lead, d): the null embedding everywhere, ``rows`` at the batch indices ``keep``.

    The encoder still runs (on zero rows when all are dropped), so its parameters stay in the graph:
    DDP without find_unused_parameters needs every rank to touch the same parameters.
    """
    full = rows.new_empty(*lead, null.shape[-1])  # filled in place: one pass fewer than index_copy
    return full.copy_(null.to(rows.dtype).expand_as(full)).index_copy_(0, keep, rows)


@dataclass
class EmbeddedConditioning:
    """The conditioning after embedding, in model space (d = hidden size)."""

    frame: Tensor  # (B, T, d) added to the projected latent (lyrics + context)
    style: Tensor | None  # (B, S', d) cross-attention keys/values; None without style cross-attention
    style_mask: Tensor | None  # (B, S') bool
    vector: Tensor  # (B, d) pooled style + speaker, added to the timestep embedding


@dataclass
class PreparedConditioning:
    """A conditioning embedded once (``DiffusionTransformer.prepare``): nothing in it depends on sigma, so
    a sampling run embeds lyrics, style and context once instead of at every step and guidance pass."""

    cond: DiTConditioning
    embedded: EmbeddedConditioning
    all_frames_valid: bool = False  # read once here: the self-attention then needs no mask (flash on CUDA)

    @property
    def batch_size(self) -> int:
        return self.cond.batch_size

    def head(self, rows: int) -> PreparedConditioning:
        """The first ``rows`` samples, by slicing: the conditional pass of a guidance batch (stacked first
        by ``GuidedVelocity``) without running the encoders again for the unguided steps."""
        cut = {f.name: getattr(self.cond, f.name) for f in fields(self.cond)}
        cond = DiTConditioning(**{k: v[:rows] if isinstance(v, Tensor) else v for k, v in cut.items()})
        e = self.embedded
        embedded = EmbeddedConditioning(
            frame=e.frame[:rows],
            style=None if e.style is None else e.style[:rows],
            style_mask=None if e.style_mask is None else e.style_mask[:rows],
            vector=e.vector[:rows],
        )
        valid = self.all_frames_valid or bool(cond.frame_mask.all())
        return PreparedConditioning(cond, embedded, all_frames_valid=valid)


class ConditionEmbedder(nn.Module):
    """Embeds a DiTConditioning; learned null embeddings stand in for dropped or absent inputs."""

    def __init__(
        self,
        hidden_size: int,
        latent_channels: int,
        text_dim: int,
        lyric_vocab_size: int,
        lyric_dim: int,
        lyric_conv_layers: int = 4,
        lyric_kernel_size: int = 7,
        speaker_dim: int | None = None,
        use_context: bool = True,
        style_tokens: bool = True,
    ) -> None:
        """``style_tokens``: False when no block cross-attends (then only the pooled style is embedded)."""
        super().__init__()
        d = hidden_size
        self.lyric_embedder = LyricEmbedder(lyric_vocab_size, lyric_dim, lyric_conv_layers, lyric_kernel_size)
        self.lyric_proj = nn.Linear(lyric_dim, d)
        self.text_dim = text_dim
        # registration order kept as before the switch: optimizer state in checkpoints follows it
        self.style_proj = (
            nn.Sequential(nn.Linear(text_dim, d), nn.SiLU(), nn.Linear(d, d)) if style_tokens else None
        )
        self.pooled_proj = nn.Sequential(nn.Linear(text_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.null_lyrics = nn.Parameter(torch.zeros(d))
        self.null_style = nn.Parameter(torch.zeros(d)) if style_tokens else None
        self.null_pooled = nn.Parameter(torch.zeros(d))
        self.speaker_dim = speaker_dim
        self.speaker_proj = nn.Linear(speaker_dim, d) if speaker_dim else None
        self.null_speaker = nn.Parameter(torch.zeros(d)) if speaker_dim else None
        self.use_context = use_context
        self.context_proj = nn.Linear(latent_channels + 1, d) if use_context else None
        self.null_context = nn.Parameter(torch.zeros(d)) if use_context else None
        for null in (
            self.null_lyrics,
            self.null_style,
            self.null_pooled,
            self.null_speaker,
            self.null_context,
        ):
            if null is not None:
                nn.init.normal_(null, std=0.02)

    def forward(self, cond: DiTConditioning, skip_dropped: bool | None = None) -> EmbeddedConditioning:
        """``skip_dropped``: run the lyric and style encoders only on rows that keep them (the others get
        the null embedding anyway). True reads the drop flags (``prepare``: once per run); False reads
        none and skips the rows the host-side hints name (what a step on an accelerator does); None (the
        default) reads them where that costs nothing (CPU tensors) and uses the hints elsewhere.
        """
        skip = cond.frame_mask.device.type == "cpu" if skip_dropped is None else skip_dropped  # read flags
        idle: list[Tensor] = []  # zero (.., d) terms of parameters this batch does not need (see _unused)
        valid = cond.known_all_valid()
        frame = self._lyrics(cond, skip, valid, idle)
        if self.use_context:
            frame = frame + self._context(cond, idle)
        elif cond.context_present().any():
            raise RefrainInputError(
                "model.dit.config.use_context",
                "the batch carries a context latent but the model has no context input",
                "set use_context: true or stop passing context",
            )
        if not valid:  # multiplying by a mask of ones changes nothing: skipped when every frame is valid
            frame = frame * cond.frame_mask.unsqueeze(-1).to(frame.dtype)
        style, style_mask, pooled = self._style(cond, skip)
        vector = pooled + self._speaker(cond, pooled)
        for term in idle:
            vector = vector + term.to(vector.dtype)
        return EmbeddedConditioning(frame=frame, style=style, style_mask=style_mask, vector=vector)

    @staticmethod
    def _unused(value: Tensor) -> Tensor:
        """``value`` times zero, added to the (B, d) vector: a parameter whose output this batch does not
        need stays in the graph (gradient exactly zero, as through a ``where`` that discards it) for DDP
        without find_unused_parameters, at the cost of a d-sized op instead of a pass over (B, T, d)."""
        return value.reshape(-1, value.shape[-1])[:1] * 0.0

    def _lyrics(self, cond: DiTConditioning, skip: bool, valid: bool, idle: list[Tensor]) -> Tensor:
        keep, hinted = _kept(cond.drop_lyrics, cond.host_dropped_lyrics, skip)
        if keep is None:
            emb = self.lyric_proj(self.lyric_embedder(cond.lyrics, cond.frame_mask, valid))
            if skip:  # the flags were read: no row drops its lyrics, the where would copy emb unchanged
                idle.append(self._unused(self.null_lyrics))
                return emb
            return torch.where(cond.drop_lyrics[:, None, None], self.null_lyrics.to(emb.dtype), emb)
        emb = self.lyric_proj(self.lyric_embedder(cond.lyrics[keep], cond.frame_mask[keep], valid))
        out = _scatter_rows(self.null_lyrics, keep, emb, (cond.batch_size, cond.num_frames))
        if hinted:  # rows dropped on the device but not named by the hint
            out = torch.where(cond.drop_lyrics[:, None, None], self.null_lyrics.to(out.dtype), out)
        return out

    def _context(self, cond: DiTConditioning, idle: list[Tensor]) -> Tensor:
        assert self.context_proj is not None and self.null_context is not None
        b, t = cond.batch_size, cond.num_frames
        null = self.null_context.expand(b, t, -1)
        weight = self.context_proj.weight
        if cond.context is None or cond.context_mask is None:
            if torch.is_grad_enabled():
                # No reference in this batch: the projection still runs (on one zero row, discarded) so
                # it takes part in every step's graph; DDP without find_unused_parameters hangs when one
                # rank's batch has a context span and another's has none.
                idle.append(self._unused(self.context_proj(weight.new_zeros(1, weight.shape[1]))))
            return null  # the null embedding everywhere, as the where over an all-absent batch gives
        mask = cond.context_mask.to(cond.context.dtype)
        feats = torch.cat([cond.context * mask, mask], dim=1).transpose(1, 2).to(weight.dtype)
        emb = self.context_proj(feats)
        return torch.where(cond.context_present()[:, None, None], emb, null.to(emb.dtype))

    def _style(self, cond: DiTConditioning, skip: bool) -> tuple[Tensor | None, Tensor | None, Tensor]:
        style_in = cond.style.to(self.pooled_proj[0].weight.dtype)
        mask = cond.style_mask.bool()
        dropped = cond.drop_style | ~mask.any(dim=1)
        weights = cond.style_mask.to(style_in.dtype).unsqueeze(-1)
        mean = (style_in * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        keep, hinted = _kept(dropped, cond.host_dropped_style, skip)
        if keep is None or hinted:
            pooled = self.pooled_proj(mean) if keep is None else self._rows(self.pooled_proj, mean, keep)
            pooled = torch.where(dropped[:, None], self.null_pooled.to(pooled.dtype), pooled)
        else:
            pooled = _scatter_rows(self.null_pooled, keep, self.pooled_proj(mean[keep]), mean.shape[:1])
        if self.style_proj is None or self.null_style is None:
            return None, None, pooled
        if keep is None or hinted:
            tokens = (
                self.style_proj(style_in) if keep is None else self._rows(self.style_proj, style_in, keep)
            )
            tokens = torch.where(dropped[:, None, None], self.null_style.to(tokens.dtype), tokens)
        else:
            tokens = _scatter_rows(self.null_style, keep, self.style_proj(style_in[keep]), style_in.shape[:2])
        first_only = torch.zeros_like(mask)
        first_only[:, 0] = True
        mask = torch.where(dropped[:, None], first_only, mask)
        return tokens, mask, pooled

    @staticmethod
    def _rows(encoder: nn.Module, x: Tensor, keep: Tensor) -> Tensor:
        """``encoder`` on the rows ``keep`` only; the other rows zero (the caller's ``where`` nulls them)."""
        rows = encoder(x[keep])
        return rows.new_zeros(*x.shape[:-1], rows.shape[-1]).index_copy(0, keep, rows)

    def _speaker(self, cond: DiTConditioning, like: Tensor) -> Tensor:
        if self.speaker_proj is None or self.null_speaker is None:
            return torch.zeros_like(like)
        null = self.null_speaker.to(like.dtype).expand_as(like)
        weight = self.speaker_proj.weight
        # A batch without speakers still runs the projection (zero rows, discarded): see _context.
        speaker = (
            cond.speaker if cond.speaker is not None else weight.new_zeros(like.shape[0], weight.shape[1])
        )
        present = (speaker != 0).any(dim=1) & ~cond.drop_style
        emb = self.speaker_proj(speaker.to(weight.dtype))
        return torch.where(present[:, None], emb.to(like.dtype), null)
