"""Blender user interface of the extension: preferences, scene settings and the sidebar panel."""

from __future__ import annotations
