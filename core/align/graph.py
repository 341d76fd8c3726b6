"""The pair graph: connected parts and the maximum-confidence spanning tree."""

from __future__ import annotations

import numpy as np


def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def connected_parts(n_images: int, edges: np.ndarray) -> list[list[int]]:
    """Images grouped by connectivity (edges taken undirected), largest part first.

    Ties keep the part with the smallest image index first.
    """
    parent = list(range(n_images))
    for i, j in edges:
        parent[_find(parent, int(i))] = _find(parent, int(j))
    parts: dict[int, list[int]] = {}
    for k in range(n_images):
        parts.setdefault(_find(parent, k), []).append(k)
    return sorted(parts.values(), key=lambda p: (-len(p), p[0]))


def spanning_tree(n_images: int, edges: np.ndarray, score: np.ndarray) -> list[int]:
    """Indices of the maximum-score spanning tree's edges (Kruskal), strongest first."""
    parent = list(range(n_images))
    tree = []
    for e in np.argsort(-score, kind="stable"):
        a, b = _find(parent, int(edges[e, 0])), _find(parent, int(edges[e, 1]))
        if a != b:
            parent[a] = b
            tree.append(int(e))
    return tree
