"""Shared test builders: tiny real models, bundles and songs, built in code."""
