"""Pair graphs against brute-force definitions, the reference's order, and bad specs."""

from __future__ import annotations

import itertools

import pytest

from core.errors import InputError
from core.pairs import make_pairs, parse_graph


def _brute_force(n: int, graph: str, window: int, cyclic: bool, ref: int) -> set[frozenset]:
    """The graph's unordered pairs straight from the definition in dust3r_reference.md §1.12."""
    pairs = set()
    for a, b in itertools.combinations(range(n), 2):
        d = b - a
        if graph == "complete":
            keep = True
        elif graph == "swin":
            keep = d <= window or (cyclic and n - d <= window)
        elif graph == "logwin":
            steps = [2**k for k in range(window)]
            if cyclic:
                keep = any(d % n == s % n or (n - d) % n == s % n for s in steps)
            else:
                keep = d in steps
        else:
            keep = ref in (a, b)
        if keep:
            pairs.add(frozenset((a, b)))
    return pairs


CASES = [
    (n, graph, window, cyclic)
    for n in (2, 3, 4, 5, 8, 13)
    for graph, window, cyclic in [
        ("complete", 3, True),
        ("swin", 1, True),
        ("swin", 3, True),
        ("swin", 3, False),
        ("swin", 20, True),
        ("swin", 20, False),
        ("logwin", 1, True),
        ("logwin", 3, True),
        ("logwin", 3, False),
        ("logwin", 6, True),
        ("oneref", 3, True),
    ]
]


@pytest.mark.parametrize(("n", "graph", "window", "cyclic"), CASES)
def test_graph_matches_brute_force_definition(n: int, graph: str, window: int, cyclic: bool):
    ref = n - 1
    pairs = make_pairs(n, graph, window=window, cyclic=cyclic, ref=ref)
    forward = make_pairs(n, graph, window=window, cyclic=cyclic, ref=ref, symmetrize=False)
    expected = _brute_force(n, graph, window, cyclic, ref)
    assert {frozenset(p) for p in forward} == expected
    assert len(forward) == len(expected)  # each unordered pair once
    # Symmetrised: all forward pairs first, then the same pairs reversed, in the same order.
    assert pairs == forward + [(j, i) for i, j in forward]
    assert len(set(pairs)) == len(pairs) == 2 * len(expected)
    assert all(i != j for i, j in pairs)


@pytest.mark.parametrize("n", [2, 3, 6, 10])
def test_complete_counts(n: int):
    assert len(make_pairs(n)) == n * (n - 1)
    assert set(make_pairs(n)) == {(i, j) for i in range(n) for j in range(n) if i != j}


def test_reference_order_for_three_images():
    # dust3r_reference.md §1.12, observed by running the reference.
    assert make_pairs(3) == [(1, 0), (2, 0), (2, 1), (0, 1), (0, 2), (1, 2)]


def test_oneref_pairs_start_at_reference():
    assert make_pairs(4, "oneref", ref=2, symmetrize=False) == [(2, 0), (2, 1), (2, 3)]


def test_single_image_pairs_with_itself():
    for graph in ("complete", "swin", "logwin", "oneref"):
        assert make_pairs(1, graph) == [(0, 0)]


def test_window_larger_than_set_clamps():
    assert set(make_pairs(4, "swin", window=10)) == set(make_pairs(4, "complete"))
    assert set(make_pairs(4, "swin", window=10, cyclic=False)) == set(make_pairs(4, "complete"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("complete", {"graph": "complete", "window": 3, "cyclic": True, "ref": 0}),
        ("swin", {"graph": "swin", "window": 3, "cyclic": True, "ref": 0}),
        ("swin-5", {"graph": "swin", "window": 5, "cyclic": True, "ref": 0}),
        ("swin-3-noncyclic", {"graph": "swin", "window": 3, "cyclic": False, "ref": 0}),
        ("logwin-3", {"graph": "logwin", "window": 3, "cyclic": True, "ref": 0}),
        ("logwin-2-noncyclic", {"graph": "logwin", "window": 2, "cyclic": False, "ref": 0}),
        ("oneref", {"graph": "oneref", "window": 3, "cyclic": True, "ref": 0}),
        ("oneref-2", {"graph": "oneref", "window": 3, "cyclic": True, "ref": 2}),
    ],
)
def test_parse_graph_reference_strings(spec: str, expected: dict):
    assert parse_graph(spec) == expected
    make_pairs(5, **parse_graph(spec))  # the result is valid keyword arguments


@pytest.mark.parametrize(
    "spec",
    ["", "tree", "swin-x", "swin-3-4", "swin-0", "oneref-a", "complete-3", "logwin-3-cyclic"],
)
def test_parse_graph_rejects_bad_specs(spec: str):
    with pytest.raises(InputError, match="graph"):
        parse_graph(spec)


def test_make_pairs_rejects_bad_arguments():
    with pytest.raises(InputError, match="Unknown pair graph"):
        make_pairs(3, "star")
    with pytest.raises(InputError, match="at least 1"):
        make_pairs(3, "swin", window=0)
    with pytest.raises(InputError, match="out of range"):
        make_pairs(3, "oneref", ref=3)
    with pytest.raises(InputError, match="at least one"):
        make_pairs(0)
