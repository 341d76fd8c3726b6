"""The paper's scene model: cameras per image and a similarity per edge, as torch parameters.

Per image ``n``: camera-to-world rotation ``R_n`` and centre ``c_n`` (OpenCV axes), focal lengths
``(fx, fy)`` (equal unless given) and principal point. Per edge ``e``: a similarity
``x -> s_e R_e x + t_e`` taking the edge's pointmaps (camera-i frame) to the world. The per-pixel
depths are not parameters here: for given cameras and similarities they have a closed form
(:mod:`.depth`), which removes millions of unknowns and the worst ill-conditioning.

Parameters are small corrections to a reference state (rotation vectors, translations in units of
the scene size, log focal, log scale), so they are all of order one. Fixed quantities (known poses
or intrinsics, the gauge camera) are masked. The pairwise scales are pinned to a geometric mean of
``base_scale`` (the reference's normalisation; with known poses, the mean that fits them), as
the unsquared loss otherwise pulls the scene smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .so3 import rotation_from_vector


@dataclass
class SceneState:
    """Cameras and pairwise similarities (numpy float64).

    Attributes:
        cam_R: ``(N, 3, 3)`` cam2world rotations; ``cam_c``: ``(N, 3)`` camera centres.
        focal: ``(N, 2)`` ``(fx, fy)`` on the map grid; ``pp``: ``(N, 2)`` principal points.
        edge_R: ``(E, 3, 3)``, ``edge_t``: ``(E, 3)``, ``edge_s``: ``(E,)``: edge-to-world
            similarities.
    """

    cam_R: np.ndarray
    cam_c: np.ndarray
    focal: np.ndarray
    pp: np.ndarray
    edge_R: np.ndarray
    edge_t: np.ndarray
    edge_s: np.ndarray

    def intrinsics(self, n: int) -> np.ndarray:
        """``(3, 3)`` K of image ``n``."""
        return np.array([[self.focal[n, 0], 0, self.pp[n, 0]],
                         [0, self.focal[n, 1], self.pp[n, 1]], [0, 0, 1.0]])

    def cam2world(self, n: int) -> np.ndarray:
        """``(4, 4)`` camera-to-world of image ``n``."""
        m = np.eye(4)
        m[:3, :3] = self.cam_R[n]
        m[:3, 3] = self.cam_c[n]
        return m


@dataclass(frozen=True)
class Freedom:
    """What the optimiser may change.

    Attributes:
        pose_free: ``(N,)`` bool, cameras whose pose is optimised.
        focal_group: ``(N,)`` int, images sharing a focal parameter share a group.
        group_free: ``(G,)`` bool, groups whose focal is optimised.
        pp_free: ``(N,)`` bool, images whose principal point is optimised.
    """

    pose_free: np.ndarray
    focal_group: np.ndarray
    group_free: np.ndarray
    pp_free: np.ndarray


class SceneModel:
    """Differentiable cameras and edge similarities around a reference :class:`SceneState`."""

    def __init__(self, state: SceneState, freedom: Freedom, base_scale: float, length: float,
                 dtype: torch.dtype = torch.float64):
        as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        self.ref = state
        self.freedom = freedom
        self.base_scale = base_scale
        self.length = length
        self.base_log_scale = float(np.log(base_scale))
        n, e = len(state.cam_c), len(state.edge_s)
        self.cam_R0, self.cam_c0 = as_t(state.cam_R), as_t(state.cam_c)
        self.focal0, self.pp0 = as_t(state.focal), as_t(state.pp)
        self.edge_R0, self.edge_t0 = as_t(state.edge_R), as_t(state.edge_t)
        self.edge_logs0 = as_t(np.log(state.edge_s))
        self.pose_mask = as_t(freedom.pose_free)[:, None]
        self.group = torch.as_tensor(freedom.focal_group, dtype=torch.long)
        self.group_mask = as_t(freedom.group_free)
        self.pp_mask = as_t(freedom.pp_free)[:, None]
        self.size = self.pp0.abs().max(1, keepdim=True).values.clamp(min=1.0)
        zeros = lambda *s: torch.zeros(*s, dtype=dtype, requires_grad=True)  # noqa: E731
        self.cam_omega, self.cam_tau = zeros(n, 3), zeros(n, 3)
        self.log_focal = zeros(len(freedom.group_free))
        self.pp_delta = zeros(n, 2)
        self.edge_omega, self.edge_tau, self.edge_sigma = zeros(e, 3), zeros(e, 3), zeros(e)

    def parameters(self) -> list[torch.Tensor]:
        return [self.cam_omega, self.cam_tau, self.log_focal, self.pp_delta,
                self.edge_omega, self.edge_tau, self.edge_sigma]

    def cameras(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``R (N, 3, 3)``, ``c (N, 3)``, ``focal (N, 2)``, ``pp (N, 2)``."""
        R = self.cam_R0 @ rotation_from_vector(self.cam_omega * self.pose_mask)
        c = self.cam_c0 + self.length * self.cam_tau * self.pose_mask
        focal = self.focal0 * torch.exp(self.log_focal * self.group_mask)[self.group][:, None]
        pp = self.pp0 + self.size * self.pp_delta * self.pp_mask
        return R, c, focal, pp

    def edges(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``R (E, 3, 3)``, ``t (E, 3)``, ``s (E,)`` with the pinned scale normalisation."""
        R = rotation_from_vector(self.edge_omega) @ self.edge_R0
        t = self.edge_t0 + self.length * self.edge_tau
        log_s = self.edge_logs0 + self.edge_sigma
        return R, t, torch.exp(log_s - log_s.mean() + self.base_log_scale)

    def state(self) -> SceneState:
        """The current values as a :class:`SceneState`, evaluated in float64 so that fixed
        quantities (known intrinsics and poses) come back bit for bit."""
        twin = SceneModel(self.ref, self.freedom, self.base_scale, self.length, torch.float64)
        with torch.no_grad():
            for mine, theirs in zip(twin.parameters(), self.parameters()):
                mine.copy_(theirs)
            R, c, focal, pp = twin.cameras()
            eR, et, es = twin.edges()
        return SceneState(*(x.numpy() for x in (R, c, focal, pp, eR, et, es)))
