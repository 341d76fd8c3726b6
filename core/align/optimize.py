"""Minimise the alignment loss over cameras and pairwise similarities."""

from __future__ import annotations

import logging
import math

import torch

from ..progress import Progress
from .loss import AlignmentLoss
from .model import SceneModel

log = logging.getLogger(__name__)

ROUND_ITERATIONS = 15
"""Optimiser iterations between two updates of the robust weights."""



def _adam_lr(lr: float, schedule: str, t: float) -> float:
    """The reference's schedules, from ``lr`` down to ``lr * 1e-4``."""
    lr_min = lr * 1e-4
    if schedule == "cosine":
        return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t)) / 2
    if schedule == "linear":
        return lr + (lr_min - lr) * t
    return lr


def optimise(
    model: SceneModel,
    loss_fn: AlignmentLoss,
    iterations: int,
    optimizer: str,
    lr: float,
    schedule: str,
    progress: Progress | None,
    tolerance: float = 1e-3,
) -> float:
    """Run the optimiser in place on ``model``; returns the final (paper's) loss.

    Rounds of iteratively reweighted least squares: the robust weights are updated, then
    L-BFGS (strong Wolfe line search) takes up to ``ROUND_ITERATIONS`` steps on the smooth
    reweighted problem. L-BFGS converges in tens of iterations from the spanning-tree start and,
    being a descent method, does not leave an exact start (Adam's first steps do). L-BFGS stops
    when a round lowers the loss by less than ``tolerance`` (relative). Progress
    reports ``iteration k/n, loss``; a cancel request raises :class:`~core.errors.Cancelled`.
    """
    params = model.parameters()
    loss = loss_fn.reweight(model)
    start = loss
    # One scale for all rounds (the robust loss, >= eps > 0), so L-BFGS's curvature pairs stay
    # comparable across rounds and exact data give a vanishing, not a divided-by-zero, loss.
    scale = loss
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=ROUND_ITERATIONS,
                                max_eval=2 * ROUND_ITERATIONS, history_size=2 * ROUND_ITERATIONS,
                                tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.9))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss_fn(model) / scale
        value.backward()
        return value

    done = 0
    while done < iterations:
        saved = [p.detach().clone() for p in params]
        steps = min(ROUND_ITERATIONS, iterations - done)
        if optimizer == "lbfgs":
            before = opt.state[params[0]].get("n_iter", 0)
            opt.param_groups[0]["max_iter"] = steps
            opt.step(closure)
            taken = opt.state[params[0]]["n_iter"] - before
        else:
            for k in range(steps):
                for group in opt.param_groups:
                    group["lr"] = _adam_lr(lr, schedule, (done + k) / iterations)
                opt.step(closure)
            taken = steps
        done += steps
        previous, loss = loss, loss_fn.reweight(model)
        if not math.isfinite(loss) or (optimizer == "lbfgs" and loss > previous):
            # A failed round: keep the last good state.
            with torch.no_grad():
                for p, value in zip(params, saved):
                    p.copy_(value)
            loss = loss_fn.reweight(model)
            break
        if progress is not None:
            progress("align", done / iterations, f"iteration {done}/{iterations}, loss {loss:.6g}")
        if optimizer == "lbfgs" and (previous - loss <= tolerance * previous or taken < steps):
            break
    log.info("%s: %d iterations, loss %.6g -> %.6g", optimizer, done, start, loss)
    return loss
