"""refrain.sampling: pure sampler functions (schedules, solvers, guidance, editing modes).

Typical use (text2music latents)::

    sigmas = sigma_schedule(60, shift=3.0)
    velocity = GuidedVelocity(model, cond, guidance=APG(), scale=15.0,
                              schedule=GuidanceSchedule(60, interval=0.5))
    latents = sample(velocity, noise, sigmas, "euler", generator=generator)
"""

from __future__ import annotations

from refrain.sampling.edits import (
    apply_crossfade,
    audio2audio,
    audio2audio_start,
    crossfade_weights,
    extend,
    extend_latent,
    frame_mask,
    noised,
    repaint,
    repaint_start_index,
    retake_noise,
)
from refrain.sampling.flowedit import (
    FLOWEDIT_PRESETS,
    FlowEditPreset,
    flowedit,
    flowedit_bounds,
    flowedit_preset,
    get_preset,
)
from refrain.sampling.guidance import (
    APG,
    CFG,
    CFGZeroStar,
    Guidance,
    GuidanceSchedule,
    MomentumBuffer,
    apg,
    apg_direction,
    cfg,
    cfg_zero_alpha,
    cfg_zero_star,
    style_lyrics_cfg,
)
from refrain.sampling.guided import GuidedVelocity, sample_guided, velocity_of
from refrain.sampling.schedules import shift_sigmas, sigma_schedule, start_index_for_sigma, timesteps
from refrain.sampling.solvers import (
    SOLVERS,
    StepCallback,
    VelocityFn,
    euler_step,
    get_solver,
    heun_step,
    pingpong_step,
    randn_like_from,
    sample,
    sigma_batch,
)

__all__ = [
    "APG",
    "CFG",
    "FLOWEDIT_PRESETS",
    "SOLVERS",
    "CFGZeroStar",
    "FlowEditPreset",
    "Guidance",
    "GuidanceSchedule",
    "GuidedVelocity",
    "MomentumBuffer",
    "StepCallback",
    "VelocityFn",
    "apg",
    "apg_direction",
    "apply_crossfade",
    "audio2audio",
    "audio2audio_start",
    "cfg",
    "cfg_zero_alpha",
    "cfg_zero_star",
    "crossfade_weights",
    "euler_step",
    "extend",
    "extend_latent",
    "flowedit",
    "flowedit_bounds",
    "flowedit_preset",
    "frame_mask",
    "get_preset",
    "get_solver",
    "heun_step",
    "noised",
    "pingpong_step",
    "randn_like_from",
    "repaint",
    "repaint_start_index",
    "retake_noise",
    "sample",
    "sample_guided",
    "shift_sigmas",
    "sigma_batch",
    "sigma_schedule",
    "start_index_for_sigma",
    "style_lyrics_cfg",
    "timesteps",
    "velocity_of",
]
