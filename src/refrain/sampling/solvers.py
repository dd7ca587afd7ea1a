"""ODE/SDE solvers over a velocity callable, and the sampling loop that drives them.

Every solver is a pure function of a ``velocity_fn(x, sigma (B,), step_index) -> v`` with the
flow-matching convention x_sigma = (1 - sigma) x0 + sigma noise, v = noise - x0, so that
guidance, editing modes and plain toy fields all plug in the same way and test on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

import torch
from torch import Tensor

from refrain.errors import RefrainInputError

VelocityFn = Callable[[Tensor, Tensor, int], Tensor]
"""velocity_fn(x (B, C, T), sigma (B,), step_index) -> velocity shaped like x."""

StepCallback = Callable[[int, Tensor, float], "Tensor | None"]
"""callback(step_index, x_after_step, sigma_next) -> replacement x or None (keep)."""

SolverStep = Callable[[VelocityFn, Tensor, float, float, int, "torch.Generator | None"], Tensor]


_RUN_SIGMAS: ContextVar[dict[tuple[float, int, torch.dtype, torch.device], Tensor] | None] = ContextVar(
    "refrain_run_sigmas", default=None
)


def sigma_batch(x: Tensor, sigma: float) -> Tensor:
    """A (B,) sigma for the model; float32 unless x is float64, so bf16 latents keep exact sigmas.

    Inside ``sample`` the run's grid was built once before the first step and is handed out from
    there (velocity functions read sigma, never write it): a tensor made between two model calls pays a
    cold dispatch, one made in a row with the others does not.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    table = _RUN_SIGMAS.get()
    key = (sigma, x.shape[0], dtype, x.device)
    if table is not None and key in table:
        return table[key]
    return torch.full((x.shape[0],), sigma, dtype=dtype, device=x.device)


class NoiseDraws:
    """A stochastic solver's per-step noise for a whole run, drawn in one call from the run's generator.

    Why: one draw instead of one per step skips a cold dispatch between every two model calls (time the
    sampler spends outside the network). Bit for bit the noise the steps would draw one by one, in the
    same order, leaving the generator in the same state: torch's CPU normal sampler fills blocks of 16
    values, so draws of a multiple of 16 values concatenate (``predraw`` checks it; tested).
    """

    def __init__(self, generator: torch.Generator, like: Tensor, count: int) -> None:
        shape = (count, *like.shape)
        drawn = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
        self.draws, self.used = drawn.unbind(0), 0

    def next_like(self, x: Tensor) -> Tensor:
        noise = self.draws[self.used]
        self.used += 1
        return noise if noise.device == x.device else noise.to(x.device)


PREDRAW_MAX_BYTES = 64 << 20  # longer runs of long songs keep drawing step by step


def predraw(x: Tensor, draws: int, generator: torch.Generator | None) -> NoiseDraws | torch.Generator | None:
    """``NoiseDraws`` for ``draws`` steps when one draw gives the same values as the steps' own, else
    ``generator`` itself (a GPU generator, another dtype, a size that is no multiple of 16, too large)."""
    if (
        draws < 2
        or generator is None
        or generator.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or x.numel() % 16
        or draws * x.numel() * x.element_size() > PREDRAW_MAX_BYTES
    ):
        return generator
    return NoiseDraws(generator, x, draws)


def randn_like_from(x: Tensor, generator: torch.Generator | NoiseDraws | None) -> Tensor:
    """Gaussian noise shaped like x, drawn on the generator's device then moved.

    Drawing on the generator's own device means a CPU-seeded generator gives the same noise
    whether the latents live on CPU or GPU, which keeps seeds portable. ``NoiseDraws`` hands out
    its next pre-drawn tensor instead.
    """
    if isinstance(generator, NoiseDraws):
        return generator.next_like(x)
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return noise.to(x.device)


def euler_step(
    velocity_fn: VelocityFn,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    step_index: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x <- x + (sigma_next - sigma) * v(x, sigma): first order, one model call."""
    velocity = velocity_fn(x, sigma_batch(x, sigma), step_index)
    return torch.add(x, velocity, alpha=sigma_next - sigma)


def heun_step(
    velocity_fn: VelocityFn,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    step_index: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Average the slopes at both ends of the step (second order, two model calls).

    The step into sigma = 0 is a plain Euler step: the model is never asked for a velocity
    at clean data, where the field is least trained, and it saves a call.
    """
    velocity = velocity_fn(x, sigma_batch(x, sigma), step_index)
    x_euler = torch.add(x, velocity, alpha=sigma_next - sigma)
    if sigma_next == 0.0:
        return x_euler
    velocity_end = velocity_fn(x_euler, sigma_batch(x, sigma_next), step_index)
    return torch.add(x, velocity + velocity_end, alpha=0.5 * (sigma_next - sigma))


def pingpong_step(
    velocity_fn: VelocityFn,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    step_index: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Predict x0 = x - sigma v, then re-noise it to sigma_next with fresh noise from ``generator``.

    Stochastic: each step forgets the previous noise, which corrects drift at the cost of
    detail; deterministic for a given generator state.
    """
    velocity = velocity_fn(x, sigma_batch(x, sigma), step_index)
    x0 = torch.add(x, velocity, alpha=-sigma)
    if sigma_next == 0.0:
        return x0
    return x0.lerp_(randn_like_from(x, generator), sigma_next)  # (1 - s') x0 + s' noise in one pass


SOLVERS: dict[str, SolverStep] = {
    "euler": euler_step,
    "heun": heun_step,
    "pingpong": pingpong_step,
}
NOISY = frozenset({"pingpong"})  # solvers that draw fresh noise at every step into sigma_next > 0


def get_solver(name: str) -> SolverStep:
    """Look a solver step up by its config name."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise RefrainInputError(
            "solver", f"unknown solver {name!r}", f"use one of {', '.join(sorted(SOLVERS))}"
        ) from None


@torch.no_grad()
def sample(
    velocity_fn: VelocityFn,
    x: Tensor,
    sigmas: Tensor,
    solver: str = "euler",
    *,
    start_index: int = 0,
    end_index: int | None = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Integrate from ``sigmas[start_index]`` to ``sigmas[end_index]`` (default: the final 0).

    ``x`` is the state at ``sigmas[start_index]`` (pure noise for text2music, a partially
    noised latent for repaint/audio2audio). After every step ``callback(i, x, sigma_next)`` may
    return a replacement state (repaint resets the kept frames there) or None; it is also the
    hook for progress bars. The step index passed to ``velocity_fn`` is the absolute grid
    index, so guidance intervals mean the same thing when a run starts mid-grid.
    """
    step = get_solver(solver)
    values = sigmas.tolist()
    num_steps = len(values) - 1
    end = num_steps if end_index is None else end_index
    if not 0 <= start_index <= end <= num_steps:
        raise RefrainInputError(
            "start_index/end_index",
            f"need 0 <= start ({start_index}) <= end ({end}) <= {num_steps} steps",
            "pick indices inside the sigma grid",
        )
    noise: torch.Generator | NoiseDraws | None = generator
    if solver in NOISY:  # the same stream, drawn once (see NoiseDraws)
        noise = predraw(x, sum(values[i + 1] != 0.0 for i in range(start_index, end)), generator)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    used = values[start_index : end + 1]  # the run's (B,) sigmas: rows of one tensor, built in three ops
    rows = torch.tensor(used, dtype=dtype, device=x.device)[:, None].expand(-1, x.shape[0]).contiguous()
    grid = {(v, x.shape[0], dtype, x.device): row for v, row in zip(used, rows.unbind(0), strict=True)}
    token = _RUN_SIGMAS.set(grid)
    try:
        for index in range(start_index, end):
            x = step(velocity_fn, x, values[index], values[index + 1], index, noise)  # type: ignore[arg-type]
            if callback is not None:
                replaced = callback(index, x, values[index + 1])
                if replaced is not None:
                    x = replaced
    finally:
        _RUN_SIGMAS.reset(token)
    return x
