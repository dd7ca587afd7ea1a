"""Every sampling knob in one record: it builds the sigma grid and the guided velocity, and it is what a
sidecar stores, so an output can be regenerated from its JSON alone."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.guidance import APG, CFG, DECAYS, CFGZeroStar, Guidance, GuidanceSchedule
from refrain.sampling.guided import GuidedVelocity
from refrain.sampling.schedules import DEFAULT_SIGMA_MIN, sigma_schedule
from refrain.sampling.solvers import SOLVERS


@dataclass(frozen=True)
class SamplerOptions:
    """Solver, schedule, guidance and seed. Defaults are ACE-Step's (60 Euler steps, APG 15, interval 0.5).

    ``lyrics_guidance_scale`` None guides style and lyrics together with ``guidance_scale`` (two model
    passes a step); a number guides them separately (three passes): ``guidance_scale`` is then the
    style scale. ``seed`` None draws one, which ``resolved()`` fixes so the sidecar can record it.
    """

    steps: int = 60
    solver: str = "euler"
    shift: float = 3.0
    sigma_min: float = DEFAULT_SIGMA_MIN
    guidance: str = "apg"
    guidance_scale: float = 15.0
    lyrics_guidance_scale: float | None = None
    guidance_interval: float = 0.5
    guidance_decay: str = "none"
    guidance_min_scale: float = 1.0
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 2.5
    apg_dims: tuple[int, ...] = (-2, -1)  # APG's norm/projection axes of (B, C, T); ACE-Step 1.5: time, (-1,)
    cfg_zero_init_steps: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "apg_dims", tuple(int(d) for d in self.apg_dims))  # JSON gives a list
        if self.steps < 1:
            raise RefrainInputError("steps", f"must be >= 1, got {self.steps}", "use e.g. 60")
        if self.solver not in SOLVERS:
            raise RefrainInputError(
                "solver", f"unknown solver {self.solver!r}", f"use one of {', '.join(SOLVERS)}"
            )
        if self.guidance not in GUIDANCE_NAMES:
            raise RefrainInputError(
                "guidance", f"unknown guidance {self.guidance!r}", f"use one of {', '.join(GUIDANCE_NAMES)}"
            )
        if self.guidance_decay not in DECAYS:
            raise RefrainInputError(
                "guidance_decay", f"unknown decay {self.guidance_decay!r}", f"use one of {', '.join(DECAYS)}"
            )
        if not 0.0 <= self.guidance_interval <= 1.0:
            raise RefrainInputError(
                "guidance_interval", f"must be in [0, 1], got {self.guidance_interval}", "use e.g. 0.5 or 1.0"
            )
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise RefrainInputError("seed", f"{self.seed} is out of range", "use a non-negative integer")

    def resolved(self) -> SamplerOptions:
        """A copy with a concrete seed (drawn when none was given)."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(2**31))

    def sigmas(self) -> Tensor:
        return sigma_schedule(self.steps, self.shift, self.sigma_min)

    def make_guidance(self) -> Guidance | None:
        """A fresh guidance strategy (APG keeps momentum, so every velocity function gets its own)."""
        return GUIDANCES[self.guidance](self)

    def guided(self, model: Any, cond: Any) -> GuidedVelocity:
        """The solver's ``velocity_fn`` for ``model`` under ``cond`` with these guidance settings."""
        schedule = GuidanceSchedule(
            self.steps, self.guidance_interval, self.guidance_decay, self.guidance_min_scale
        )  # type: ignore[arg-type]
        return GuidedVelocity(
            model, cond, self.make_guidance(), self.guidance_scale, self.lyrics_guidance_scale, schedule
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplerOptions:
        """Inverse of ``to_dict``; unknown keys are an error (a sidecar from another version says so)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RefrainInputError(
                "options",
                f"unknown sampler option(s) {', '.join(unknown)}",
                f"use only {', '.join(sorted(known))}",
            )
        return cls(**dict(values))


GUIDANCES: dict[str, Callable[[SamplerOptions], Guidance | None]] = {
    "none": lambda options: None,
    "cfg": lambda options: CFG(),
    "apg": lambda options: APG(
        norm_threshold=options.apg_norm_threshold, momentum=options.apg_momentum, dims=options.apg_dims
    ),
    "cfg_zero_star": lambda options: CFGZeroStar(zero_init_steps=options.cfg_zero_init_steps),
}
"""``--guidance`` name -> the strategy built from the options (a new strategy is one entry here)."""
GUIDANCE_NAMES = tuple(GUIDANCES)
