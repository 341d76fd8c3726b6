"""Blender-free reconstruction core.

Everything here runs in a plain Python (the worker process, tests, command-line tools) and never
imports ``bpy``. Modules use relative imports only, so the package works both as the top-level
``core`` (worker, tests) and inside the installed extension (``bl_ext.<repo>.<id>.core``).
Only ``errors``, ``progress``, ``config``, ``result``, ``predictions``, ``backends`` and
``geometry.conventions`` may be imported inside Blender's own process: they never import torch.
"""
