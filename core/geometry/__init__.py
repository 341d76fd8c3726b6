"""Blender-free geometry helpers (numpy only)."""
