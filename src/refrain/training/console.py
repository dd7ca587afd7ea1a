"""A console a person can read: each Lightning line once, no advertising, no warnings that do not apply.

- Lightning gives its ``lightning`` logger a console handler of its own *and* lets records propagate to
  the root logger, which Hydra configures: every INFO line came out twice. Under Hydra the root handlers
  (console and the run's log file) print it once.
- Lightning's "try LitLogger" tip is an advertisement, not information about the run.
- ModelCheckpoint's 13-line warning (with example code) about manual optimisation says a checkpoint holds
  the weights *after* the step: that is what the VAE task wants (a resume continues from them). Its
  "checkpoint directory is not empty" warning is the run-folder check's job (refrain.training.run_folder).
"""

from __future__ import annotations

import logging
import warnings

_NOISE = ("Tip: For seamless cloud logging",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _NOISE)


def quiet_console() -> None:
    """Idempotent; call once per process before the Trainer is built."""
    root = logging.getLogger()
    lightning = logging.getLogger("lightning")
    if root.handlers:
        for handler in list(lightning.handlers):
            lightning.removeHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # The EMA copies and a LoRA run's frozen base sit in eval mode on purpose (no dropout, no batch stats).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # refrain.training.run_folder already refuses a run folder holding another run's checkpoints.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Deprecations inside the pinned libraries (Lightning on torch's pytree, diffusers' Oobleck on
    # weight_norm): nothing a user of refrain can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"`torch.nn.utils.weight_norm` is deprecated")
    # refrain.data.shard_stream gives each loader worker its own batches, so its length is exact.
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
