"""Fixtures: the tiny real Oobleck VAE."""

from helpers.tiny_vae import music, tiny_config, tiny_vae  # noqa: F401
