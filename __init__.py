"""Blender extension entry point: the extension root is the repository root (it bundles the
backend package next to the add-on); the add-on itself lives in sp4d_blender/."""

from .sp4d_blender import register, unregister  # noqa: F401
