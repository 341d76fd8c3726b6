"""Depth for blank regions (walls, floors, ceilings) from the planes the depths around them lie on.

Matching cannot tell depths apart where an image has no texture, but such regions are mostly
parts of planes whose edges and surroundings do have matched depths. On a plane, inverse depth
is affine in the pixel coordinates, ``1/z = a u + b v + c``, so a few known depths around a
region determine its depth everywhere inside. Planes are found by RANSAC so that depths of other
surfaces in the ring around a region do not bend them, and a region that spans a fold (walls
meeting) gets a plane on each side. :mod:`.mvs` then keeps only the filled depths that other
views confirm.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_MAX_STD = 0.02  # grey std (0..1) of the window below which a pixel may be plane-filled
_MIN_REGION = 100  # pixels; smaller textureless regions are left alone
_CLIPPED = 0.02  # window mean grey this close to 0 or 1 is clipped
_MIN_SUPPORT = 30  # depths on a region's plane that the plane must rest on
_INLIER_TOLERANCE = 0.03  # relative inverse-depth residual of a depth on the plane
_RANSAC_TRIALS = 200  # three-point samples per plane
_RANSAC_SCORED = 2000  # depths on which the samples are ranked
_MAX_PLANES = 3  # planes per region (walls, floor and ceiling meeting in a blank area)
_MIN_SEEN_SHARE = 0.9  # of a plane's depths where it must be the surface seen


def _ransac_plane(
    A: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """The plane that most of the depths lie on: ``(3,)`` coefficients and ``(P,)`` inlier mask.

    Args:
        A: ``(P, 3)`` float64 rows ``[u, v, 1]``.
        y: ``(P,)`` float64 inverse depths (> 0).
        rng: draws the three-point samples.

    Returns:
        The least-squares plane of the largest consensus set (a depth is in it when its relative
        residual is below :data:`_INLIER_TOLERANCE`) and that set, or ``None`` when no plane
        gathers :data:`_MIN_SUPPORT` depths.
    """
    samples = rng.integers(0, len(y), size=(_RANSAC_TRIALS, 3))
    M, b = A[samples], y[samples]
    # Collinear samples give no plane: drop them before solving.
    solvable = np.abs(np.linalg.det(M)) > 1e-9
    if not solvable.any():
        return None
    planes = np.linalg.solve(M[solvable], b[solvable][..., None])[..., 0]  # (T, 3)
    # The samples are ranked on a random subset of the depths (enough to tell the largest
    # consensus, and a bounded (T, subset) array for regions with many depths).
    scored = rng.permutation(len(y))[:_RANSAC_SCORED]
    counts = (np.abs(planes @ A[scored].T - y[scored]) < _INLIER_TOLERANCE * y[scored]).sum(1)
    winner = planes[int(counts.argmax())]
    best = np.abs(A @ winner - y) < _INLIER_TOLERANCE * y
    for _ in range(2):  # refit on the consensus set, then re-collect it
        if best.sum() < _MIN_SUPPORT:
            return None
        plane = np.linalg.lstsq(A[best], y[best], rcond=None)[0]
        best = np.abs(A @ plane - y) < _INLIER_TOLERANCE * y
    return (plane, best) if best.sum() >= _MIN_SUPPORT else None


def _region_planes(
    A: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, float] | None:
    """Up to :data:`_MAX_PLANES` planes that the depths on and around a region lie on.

    Sequential RANSAC (:func:`_ransac_plane`): the plane of the most depths, then the plane of
    the most of the rest, and so on. Where planes meet in a blank region (walls at a corner), the
    surface seen at a pixel is the nearest of them at an inside corner (largest inverse depth) and
    the farthest at an outside one. A further plane is kept only if, for one kind of corner, every
    plane is the one seen at (nearly) all of its own depths: a plane through stray depths fails
    that and ends the search.

    Args:
        A: ``(P, 3)`` float64 rows ``[u, v, 1]``.
        y: ``(P,)`` float64 inverse depths (> 0).
        rng: draws the three-point samples.

    Returns:
        ``planes`` ``(K, 3)`` float64 coefficients and ``side``: the inverse depth seen at
        ``x = [u, v, 1]`` is ``side * max(side * planes @ x)`` (``side`` = 1 at an inside corner or
        for one plane, -1 at an outside corner); ``None`` when not even one plane is supported.
    """
    found = _ransac_plane(A, y, rng)
    if found is None:
        return None
    planes, members, side = [found[0]], [found[1]], 1.0
    rest = ~found[1]
    while len(planes) < _MAX_PLANES and rest.sum() >= _MIN_SUPPORT:
        found = _ransac_plane(A[rest], y[rest], rng)
        if found is None:
            break
        member = np.zeros_like(rest)
        member[np.flatnonzero(rest)[found[1]]] = True
        trial, trial_members = np.stack(planes + [found[0]]), members + [member]
        sides = [s for s in (1.0, -1.0) if _planes_seen_where_supported(A, trial, trial_members, s)]
        if not sides:
            break
        planes, members, side = list(trial), trial_members, sides[0]
        rest &= ~member
    return np.stack(planes), side


def _planes_seen_where_supported(
    A: np.ndarray, planes: np.ndarray, members: list[np.ndarray], side: float
) -> bool:
    """Whether each plane is the one seen (``side * max``, within the inlier tolerance) at
    :data:`_MIN_SEEN_SHARE` of its own depths ``A[members[k]]``."""
    for k, member in enumerate(members):
        values = side * (A[member] @ planes.T)  # (P_k, K)
        margin = _INLIER_TOLERANCE * np.abs(values[:, k])
        seen = values[:, k] + margin >= values.max(1)
        if seen.mean() < _MIN_SEEN_SHARE:
            return False
    return True


def plane_fill(
    gray: torch.Tensor, depth: torch.Tensor, window: int, support: torch.Tensor | None = None
) -> torch.Tensor:
    """``depth`` with textureless regions filled by the planes that the known depths on and
    around them lie on; NaN where nothing is known.

    A textureless region is a connected set of pixels whose ``window``-sized neighbourhood has a
    grey std below :data:`_MAX_STD` (less its clipped parts, within :data:`_CLIPPED`
    of black or white, that reach the image border), grown by half a window (the pixels whose
    window just touches the region's edge, which matching rarely keeps either). On a plane,
    inverse depth is affine in the pixel coordinates, ``1/z = a u + b v + c``; the region's
    planes are found by RANSAC (:func:`_region_planes`) among the known depths inside the region
    and in a ``window``-wide ring around it, so depths of another surface in the ring (a wall
    meeting the floor) do not bend a plane, and a region that spans a fold gets a plane on each
    side.
    Depths of the region's edges alone often lie on a line (a panel groove), which leaves the
    plane's tilt open; ``support`` adds depths from other views, seen at other edges.

    Args:
        gray: ``(H, W)`` grey image in 0..1.
        depth: ``(H, W)`` z-depth, NaN where not kept.
        window: window side (pixels) of the texture measure, and the ring width.
        support: optional ``(H, W)`` more z-depths for the fits (NaN where none), e.g.
            :func:`.mvs._projected_depths`; they are not copied into the result.

    Returns:
        ``(H, W)`` depth, the input's values where they were finite.
    """
    image = gray.cpu().numpy().astype(np.float64)
    own = depth.cpu().numpy().astype(np.float64)
    known_depth = own if support is None else np.where(np.isfinite(own), own, support.cpu().numpy())
    inv = 1.0 / known_depth
    known = np.isfinite(inv)
    mean = ndimage.uniform_filter(image, window)
    std = np.sqrt(np.maximum(ndimage.uniform_filter(image * image, window) - mean * mean, 0.0))
    blank = std < _MAX_STD
    # A clipped (black or white) blank area that runs out of the frame is most likely a studio
    # backdrop or the sky: empty space, which planes through the object in front would fill.
    # Enclosed by the image content, it is a highlight or shadow on a surface.
    clipped, _ = ndimage.label(blank & ((mean <= _CLIPPED) | (mean >= 1.0 - _CLIPPED)))
    at_edge = np.concatenate((clipped[0], clipped[-1], clipped[:, 0], clipped[:, -1]))
    blank &= ~np.isin(clipped, at_edge[at_edge > 0])
    labels, _ = ndimage.label(blank)
    with np.errstate(divide="ignore"):
        out = 1.0 / own
    v_all, u_all = np.mgrid[: image.shape[0], : image.shape[1]]
    rng = np.random.default_rng(0)  # repeatable fills
    for region, box in enumerate(ndimage.find_objects(labels), start=1):
        margin = window + window // 2
        grown_box = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        inside = labels[grown_box] == region
        if inside.sum() < _MIN_REGION:
            continue
        inside = ndimage.binary_dilation(inside, iterations=window // 2)
        support_px = ndimage.binary_dilation(inside, iterations=window) & known[grown_box]
        if support_px.sum() < _MIN_SUPPORT:
            continue
        u, v = u_all[grown_box][support_px], v_all[grown_box][support_px]
        A = np.stack((u, v, np.ones_like(u)), 1).astype(np.float64)
        found = _region_planes(A, inv[grown_box][support_px], rng)
        if found is None:
            continue
        planes, side = found
        # Grown regions may overlap; pixels that a region filled first keep that fill.
        fill = inside & ~np.isfinite(out[grown_box])
        uf, vf = u_all[grown_box][fill], v_all[grown_box][fill]
        x = np.stack((uf, vf, np.ones_like(uf)), 1).astype(np.float64)
        values = side * (side * (x @ planes.T)).max(1)
        target = out[grown_box]
        target[fill] = np.where(values > 0, values, np.nan)
        out[grown_box] = target
    with np.errstate(divide="ignore"):
        filled = torch.as_tensor(1.0 / out, dtype=depth.dtype, device=depth.device)
    return torch.where(torch.isfinite(depth), depth, filled)
