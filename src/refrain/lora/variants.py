"""The five LoRA variants as data: what each one trains on, what it is conditioned on, what it generates.

A variant is a set of defaults for the ``data`` and ``conditioning`` sections of a LoRA JSON; the JSON may
override any of them. Nothing else in refrain branches on a variant's name: the task, the datamodule and
the sampler read these fields.

Multitrack roles (see ``refrain.data.multitrack``): every song of a multitrack dataset contributes a
``mix`` record, one ``stem:<name>`` record per stem and one ``rest:<name>`` record per stem (the song
without that stem, i.e. the sum of the other stems). A conditioned variant pairs, for each instrument
``i``, the record of role ``<target>:<i>`` (what is generated) with the record of role
``<reference>:<i>`` (what the zero-initialised control path hears):

- StemGen: target ``stem``, reference ``rest``: the drums stem given the song without drums.
- singing2accompaniment: instrument ``vocals``, target ``rest``, reference ``stem``: the song without
  vocals (the accompaniment) given the vocal stem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refrain.data.multitrack import DEFAULT_STEMS

ROLE_FAMILIES = ("stem", "rest", "mix")


@dataclass(frozen=True)
class DataSelection:
    """Which records of a prepared dataset a LoRA trains on.

    ``include_tags``: keep a record when one of its tags contains one of these as whole words
    (case-insensitive; empty = keep all). ``exclude_tags``: drop such records. ``roles``: on a multitrack
    dataset, the record roles that train (e.g. ``stem:vocals``; default ``mix``); ignored on a plain
    dataset, whose records all count. ``require_lyrics``: drop records without timed lyric lines.
    """

    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    require_lyrics: bool = False


@dataclass(frozen=True)
class ControlSpec:
    """The zero-initialised reference path of StemGen / singing2accompaniment.

    ``instruments`` is the label vocabulary (label id = position); ``target``/``reference`` are role
    families (``stem``, ``rest``, ``mix``). ``width``/``layers``/``kernel_size`` size the reference
    encoder; ``drop_reference_prob`` trains a "no reference" path so guidance can use the reference too.
    """

    instruments: tuple[str, ...]
    target: str
    reference: str
    width: int = 256
    layers: int = 2
    kernel_size: int = 7
    drop_reference_prob: float = 0.1

    def label(self, instrument: str) -> int:
        return self.instruments.index(instrument)


@dataclass(frozen=True)
class Variant:
    """Defaults of one variant (the JSON's ``variant`` key picks one)."""

    name: str
    summary: str
    data: DataSelection = field(default_factory=DataSelection)
    null_lyrics: bool = False
    control: ControlSpec | None = None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "text2music",
            "plain LoRA fine-tuning of the base task (what ACE-Step's own JSON files, without a variant, do)",
        ),
        Variant(
            "lyric2vocal",
            "vocal-only audio: lyrics + style prompt -> a vocal track",
            data=DataSelection(roles=("stem:vocals",)),
        ),
        Variant(
            "text2sample",
            "loops and samples: tag/description prompt -> a sample; lyrics always null",
            null_lyrics=True,
        ),
        Variant(
            "rapmachine",
            "rap selected from a dataset by tags: lyrics + style -> a rap song",
            data=DataSelection(include_tags=("rap", "hip hop", "hip-hop", "hiphop")),
        ),
        Variant(
            "stemgen",
            "reference mix + instrument label -> that instrument's stem fitting the reference",
            control=ControlSpec(instruments=DEFAULT_STEMS, target="stem", reference="rest"),
        ),
        Variant(
            "singing2accompaniment",
            "vocal stem + style prompt -> the accompaniment that fits it",
            control=ControlSpec(instruments=("vocals",), target="rest", reference="stem"),
        ),
    )
}
