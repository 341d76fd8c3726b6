"""Blender-free reconstruction core.

Everything here runs in a plain Python (the worker process, tests, command-line tools) and never
imports ``bpy``. Modules use relative imports only, so the package works both as the top-level
``core`` (worker, tests) and inside the installed extension (``bl_ext.<repo>.<id>.core``).
Modules imported inside Blender's own process (the result and job formats, the job runner,
camera conventions, masks, metrics, scene blocking, dependency and weights management) never
import torch; ``tests/core/test_boundaries.py`` lists them and checks it.
"""
