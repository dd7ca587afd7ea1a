"""Bundles: the manifest, verification, export, and the registry of model classes a bundle may name."""
