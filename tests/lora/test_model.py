"""AdaptedDiT's variant rules and the base-vocabulary check a LoRA run makes before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.bundles import fast_base_bundle
from helpers.lora import C, inputs, plain_cond, tiny_dit

from refrain.errors import RefrainInputError
from refrain.lora.control import ControlConditioning
from refrain.lora.model import AdaptedDiT, check_vocab_extends
from refrain.lora.variants import ControlSpec
from refrain.text.vocab import PhonemeVocab


def test_null_lyrics_is_the_base_with_lyrics_dropped() -> None:
    base = tiny_dit()
    x, sigma = inputs()
    cond = plain_cond()
    adapted = AdaptedDiT(base, null_lyrics=True).eval()
    want = base(x, sigma, cond.with_dropped(lyrics=True)).velocity
    assert torch.equal(adapted(x, sigma, cond).velocity, want)
    assert not torch.allclose(base(x, sigma, cond).velocity, want)


def test_batch_inputs_join_every_stacked_pass() -> None:
    control = ControlSpec(instruments=("a", "b"), target="stem", reference="rest")
    adapted = AdaptedDiT(tiny_dit(), control=control).eval()
    batch = {
        "reference_latent": torch.randn(2, C, 12),
        "frame_mask": torch.ones(2, 10, dtype=torch.bool),
        "instrument": torch.tensor([1, 0]),
    }
    with adapted.batch_inputs(batch):
        joined = adapted.adapt(plain_cond(batch=2).repeat(3))  # e.g. three guidance passes
    assert isinstance(joined, ControlConditioning) and joined.instrument.tolist() == [1, 0] * 3
    assert torch.equal(joined.reference[4:], batch["reference_latent"][..., :10])  # cropped to the frames
    assert adapted._inputs is None  # unbound after the block
    with pytest.raises(RefrainInputError, match="without reference_latent"), adapted.batch_inputs({}):
        pass


def test_training_drops_the_reference_at_its_rate() -> None:
    control = ControlSpec(instruments=("a",), target="stem", reference="rest", drop_reference_prob=0.3)
    adapted = AdaptedDiT(tiny_dit(), control=control).train()
    batch = {
        "reference_latent": torch.randn(4000, C, 2),
        "frame_mask": torch.ones(4000, 2, dtype=torch.bool),
        "instrument": torch.zeros(4000, dtype=torch.long),
    }
    torch.manual_seed(0)
    with adapted.batch_inputs(batch):
        rate = adapted.adapt(plain_cond(batch=4000, frames=2)).drop_reference.float().mean()
    assert abs(float(rate) - 0.3) < 0.03
    with adapted.batch_inputs(batch):
        assert not adapted.eval().adapt(plain_cond(batch=4000, frames=2)).drop_reference.any()


def test_dataset_vocabulary_must_extend_the_bases(tmp_path: Path) -> None:
    bundle = fast_base_bundle(tmp_path)  # its vocabulary: pad/unk/sep/word tokens, then a, b, c
    base = PhonemeVocab.load(bundle / "phoneme_vocab.json")
    grown = PhonemeVocab(base.tokens[len(PhonemeVocab().tokens) :] + ["d"])
    grown.save(tmp_path / "ok" / "phoneme_vocab.json")
    check_vocab_extends(bundle, tmp_path / "ok")
    PhonemeVocab(["b", "a"]).save(tmp_path / "bad" / "phoneme_vocab.json")
    with pytest.raises(RefrainInputError, match="phoneme id .* here but 'a' in the base bundle"):
        check_vocab_extends(bundle, tmp_path / "bad")
    check_vocab_extends(None, tmp_path / "bad")  # nothing to compare against
