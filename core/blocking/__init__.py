"""Scene blocking: level the floor, set real scale, and export for other tools.

numpy/scipy only, no bpy: every function takes and returns a :class:`~core.result.SceneResult`
(or arrays), so the Blender operators stay thin. ``transform`` applies a similarity to a whole
result; ``level`` finds the floor; ``scale`` sets units; ``points`` gathers the confident points
the exports write; ``colmap``, ``ply`` and ``nerf`` write COLMAP models, PLY clouds and
``transforms.json``.
"""
