"""Pair graphs: which image pairs the network sees (``dust3r_reference.md`` §1.12).

Graphs over ``N`` images, as index pairs ``(i, j)`` (the network predicts both views in camera
``i``'s frame):

* ``complete``: every unordered pair once, ``(i, j)`` with ``j < i``, in the reference's order.
* ``swin`` (sliding window): each image with the next ``window`` images, wrapping round at the end
  when ``cyclic``.
* ``logwin`` (log window): each image with the images ``2**k`` before and after it,
  ``k = 0 .. window - 1``, wrapping round when ``cyclic``.
* ``oneref``: image ``ref`` with every other image.

With ``symmetrize`` (the default, as in the reference) the reversed pairs follow all the forward
pairs, so every pair is run in both directions. A pair never holds the same image twice, except for
a single image, which the reference pairs with itself. torch-free.
"""

from __future__ import annotations

from .errors import InputError

GRAPHS = ("complete", "swin", "logwin", "oneref")
"""Supported graph names."""


def _complete(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i)]


def _window(n: int, offsets: list[int], cyclic: bool) -> list[tuple[int, int]]:
    """Unordered pairs ``(i, i + o)`` for each offset, as ``(low, high)``, sorted."""
    found: set[tuple[int, int]] = set()
    for i in range(n):
        for offset in offsets:
            for j in (i + offset, i - offset):
                if cyclic:
                    j %= n
                # A window longer than the set wraps onto the image itself: that pair is dropped.
                if 0 <= j < n and j != i:
                    found.add((min(i, j), max(i, j)))
    # The reference iterates a set (arbitrary order); sorting makes runs reproducible.
    return sorted(found)


def make_pairs(
    n_images: int,
    graph: str = "complete",
    window: int = 3,
    cyclic: bool = True,
    ref: int = 0,
    symmetrize: bool = True,
) -> list[tuple[int, int]]:
    """Directed image-index pairs for the network.

    Args:
        n_images: number of images ``N >= 1``.
        graph: one of :data:`GRAPHS`.
        window: ``swin``: number of following images; ``logwin``: number of power-of-two offsets.
        cyclic: ``swin``/``logwin`` wrap round from the last image to the first.
        ref: ``oneref``: the reference image index.
        symmetrize: append every reversed pair after the forward pairs.

    Returns:
        ``(i, j)`` index pairs, no duplicates, never ``i == j`` except ``[(0, 0)]`` for one image.
        complete: ``N (N - 1)`` directed pairs when symmetrised.

    Raises:
        InputError: unknown graph, ``window < 1``, ``ref`` out of range or ``n_images < 1``.
    """
    if n_images < 1:
        raise InputError("No images to pair: at least one usable photo is needed.")
    if graph not in GRAPHS:
        raise InputError(f"Unknown pair graph {graph!r}; choose one of {', '.join(GRAPHS)}.")
    if graph in ("swin", "logwin") and window < 1:
        raise InputError(f"Pair graph window must be at least 1, not {window}.")
    if graph == "oneref" and not 0 <= ref < n_images:
        raise InputError(
            f"Reference image {ref} is out of range for {n_images} images; "
            f"pick an index from 0 to {n_images - 1}."
        )
    if n_images == 1:
        # The reference duplicates a lone image and pairs the two copies.
        return [(0, 0)]
    if graph == "complete":
        forward = _complete(n_images)
    elif graph == "swin":
        forward = _window(n_images, list(range(1, window + 1)), cyclic)
    elif graph == "logwin":
        forward = _window(n_images, [2**k for k in range(window)], cyclic)
    else:
        forward = [(ref, j) for j in range(n_images) if j != ref]
    if not symmetrize:
        return forward
    return forward + [(j, i) for i, j in forward]


def parse_graph(spec: str) -> dict:
    """Keyword arguments for :func:`make_pairs` from a reference graph string.

    Accepts ``"complete"``, ``"swin"``, ``"swin-K"``, ``"swin-K-noncyclic"``, ``"logwin-K"``,
    ``"logwin-K-noncyclic"``, ``"oneref"`` and ``"oneref-R"``; ``K`` defaults to 3, ``R`` to 0.

    Returns:
        ``{"graph": str, "window": int, "cyclic": bool, "ref": int}``.

    Raises:
        InputError: the string is not one of these forms.
    """
    parts = spec.strip().lower().split("-")
    name, args = parts[0], parts[1:]
    result = {"graph": name, "window": 3, "cyclic": True, "ref": 0}
    bad = InputError(
        f"Cannot read the pair graph {spec!r}. Use 'complete', 'swin-3', 'swin-3-noncyclic', "
        "'logwin-3', 'logwin-3-noncyclic' or 'oneref-0'."
    )
    if name not in GRAPHS:
        raise bad
    if name in ("swin", "logwin"):
        if args and args[-1] == "noncyclic":
            result["cyclic"] = False
            args = args[:-1]
        if len(args) > 1 or (args and not args[0].isdigit()):
            raise bad
        if args:
            result["window"] = int(args[0])
        if result["window"] < 1:
            raise InputError(f"Pair graph {spec!r}: the window must be at least 1.")
    elif name == "oneref":
        if len(args) > 1 or (args and not args[0].isdigit()):
            raise bad
        if args:
            result["ref"] = int(args[0])
    elif args:
        raise bad
    return result
