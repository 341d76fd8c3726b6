"""Photo Reconstruction: a folder of photos becomes cameras, a point cloud and meshes.

Blender loads this package as ``bl_ext.<repo>.photo_recon``; scripts and tests load it from source
(see ``operators/cli.py``). Registration only defines classes and properties: the worker and the
network are started when a job runs. No timers are registered; a job still running when the
add-on is disabled is cancelled.

The submodules are imported in :func:`register`, not at import time, because pytest imports this
file (the repository root is a package) for every test run, including the bpy-free core tests.
"""

from __future__ import annotations


def _modules():
    """The modules that define classes, in registration order."""
    from .operators import blocking, dependencies, job_display, maps, reconstruct, reimport, weights
    from .ui import blocking_panel, panels, preferences, properties

    return (preferences, properties, dependencies, weights, reconstruct, job_display, reimport,
            maps, blocking, panels, blocking_panel)


def register() -> None:
    import bpy

    from .ui import properties

    for module in _modules():
        for cls in module.CLASSES:
            bpy.utils.register_class(cls)
    properties.register_props()


def unregister() -> None:
    import bpy

    from .operators import dependencies, reconstruct, weights
    from .ui import properties

    reconstruct.cancel_running_jobs()
    dependencies.cancel_running_installs()
    weights.cancel_running_downloads()
    properties.unregister_props()
    for module in reversed(_modules()):
        for cls in reversed(module.CLASSES):
            bpy.utils.unregister_class(cls)
