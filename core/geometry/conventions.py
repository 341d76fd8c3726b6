"""OpenCV <-> Blender camera conventions (numpy only, imported inside Blender's process).

Our conventions (see ``core/result.py``):

* Camera axes are OpenCV's: x right, y down, z forward. ``cam2world`` is a 4x4 camera-to-world.
* Pixel coordinates put the **centre** of the top-left pixel at (0, 0); ``u = fx * x / z + cx``.
  In continuous image coordinates measured from the top-left *corner* of the image (the ones Blender
  and Cycles use: a ``W``-pixel-wide image spans ``[0, W]``), our ``u`` is ``u_corner - 0.5``. So
  Blender's image centre ``W / 2`` is our ``(W - 1) / 2``.

Blender's camera looks down its local -z with y up, so its axes are OpenCV's with y and z flipped:
``matrix_world = cam2world_opencv @ diag(1, -1, -1, 1)``.

Blender's perspective projection (``BKE_camera_params_compute_viewplane``, the same in Cycles), for
a render of ``W x H`` pixels with pixel aspect ``(ax, ay)``, lens ``lens`` mm and a sensor size ``S``
mm along the fitted axis:

* ``ycor = ay / ax``; the fitted axis is horizontal when ``W * ax >= H * ay`` for ``AUTO``, else
  as set by ``sensor_fit`` (``HORIZONTAL`` / ``VERTICAL``);
* ``viewfac = W`` (horizontal fit) or ``ycor * H`` (vertical fit);
* ``fx = lens * viewfac / S``, ``fy = fx / ycor``;
* ``shift_x`` moves the image centre by ``shift_x * viewfac`` pixels to the right in the scene, so
  ``cx = (W - 1) / 2 - shift_x * viewfac``, and
  ``cy = (H - 1) / 2 + shift_y * viewfac / ycor`` (image rows grow downward, Blender's y upward).

``S`` is ``sensor_width`` except for an explicit ``VERTICAL`` fit, which uses ``sensor_height``.
The render ``resolution_percentage`` is assumed to be 100.
"""

from __future__ import annotations

import numpy as np

BLENDER_FROM_OPENCV_CAM = np.diag([1.0, -1.0, -1.0])
"""``(3, 3)`` float64: camera-local OpenCV axes -> Blender camera axes (its own inverse)."""

_FLIP_4 = np.diag([1.0, -1.0, -1.0, 1.0])


def cam2world_opencv_to_blender(cam2world_opencv: np.ndarray) -> np.ndarray:
    """``(4, 4)`` float64 ``matrix_world`` of a Blender camera with the given OpenCV pose.

    Args:
        cam2world_opencv: ``(4, 4)`` camera-to-world with OpenCV camera axes.
    """
    return np.asarray(cam2world_opencv, np.float64) @ _FLIP_4


def cam2world_blender_to_opencv(matrix_world: np.ndarray) -> np.ndarray:
    """``(4, 4)`` float64 OpenCV camera-to-world of a Blender camera's ``matrix_world``.

    Blender matrices may carry scale; only a rigid ``matrix_world`` gives a valid pose.
    """
    return np.asarray(matrix_world, np.float64) @ _FLIP_4


def blender_camera_params(
    K: np.ndarray, width: int, height: int, sensor_width: float = 36.0
) -> dict[str, float | str]:
    """Blender camera and render settings that reproduce the pinhole ``K`` exactly.

    Args:
        K: ``(3, 3)`` intrinsics in pixels of a ``width x height`` image, our pixel-centre
            convention (top-left pixel centre at (0, 0)), zero skew.
        width, height: image size in pixels (set as the scene's ``resolution_x/y``).
        sensor_width: sensor size in mm used along the fitted axis (both ``sensor_width`` and
            ``sensor_height`` are set to it, so the result does not depend on which one Blender
            reads).

    Returns:
        ``{"lens", "sensor_width", "sensor_height", "sensor_fit", "shift_x", "shift_y",
        "pixel_aspect_x", "pixel_aspect_y"}``. ``sensor_fit`` is ``"HORIZONTAL"`` when the image
        (with its pixel aspect) is at least as wide as tall, else ``"VERTICAL"`` (what ``AUTO``
        would pick, but fixed so a later resolution change cannot flip it). ``fx != fy`` is
        expressed through the render pixel aspect; the smaller of the two is 1, as Blender
        requires values >= 1.
    """
    K = np.asarray(K, np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not (fx > 0 and fy > 0 and width > 0 and height > 0):
        raise ValueError(f"Invalid intrinsics or size: fx={fx}, fy={fy}, size={width}x{height}.")
    ycor = fx / fy  # = pixel_aspect_y / pixel_aspect_x
    aspect_x, aspect_y = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    horizontal = width * aspect_x >= height * aspect_y
    viewfac = width if horizontal else ycor * height
    return {
        "lens": float(fx * sensor_width / viewfac),
        "sensor_width": float(sensor_width),
        "sensor_height": float(sensor_width),
        "sensor_fit": "HORIZONTAL" if horizontal else "VERTICAL",
        "shift_x": float(((width - 1) / 2.0 - cx) / viewfac),
        "shift_y": float((cy - (height - 1) / 2.0) / (viewfac / ycor)),
        "pixel_aspect_x": float(aspect_x),
        "pixel_aspect_y": float(aspect_y),
    }


def intrinsics_from_blender_camera(
    lens: float,
    sensor_width: float,
    sensor_height: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    width: int,
    height: int,
    pixel_aspect_x: float = 1.0,
    pixel_aspect_y: float = 1.0,
) -> np.ndarray:
    """``(3, 3)`` float64 ``K`` (our pixel-centre convention) of a Blender perspective camera.

    The inverse of :func:`blender_camera_params`; also reads ``AUTO`` fit. Arguments are the
    camera data's ``lens``, ``sensor_*``, ``shift_*`` and the scene's ``resolution_x/y`` and
    ``pixel_aspect_x/y``.
    """
    ycor = pixel_aspect_y / pixel_aspect_x
    if sensor_fit == "AUTO":
        horizontal = width * pixel_aspect_x >= height * pixel_aspect_y
        sensor = sensor_width
    elif sensor_fit in ("HORIZONTAL", "VERTICAL"):
        horizontal = sensor_fit == "HORIZONTAL"
        sensor = sensor_width if horizontal else sensor_height
    else:
        raise ValueError(f"Unknown sensor_fit {sensor_fit!r}.")
    viewfac = width if horizontal else ycor * height
    fx = lens * viewfac / sensor
    return np.array(
        [
            [fx, 0.0, (width - 1) / 2.0 - shift_x * viewfac],
            [0.0, fx / ycor, (height - 1) / 2.0 + shift_y * viewfac / ycor],
            [0.0, 0.0, 1.0],
        ]
    )
