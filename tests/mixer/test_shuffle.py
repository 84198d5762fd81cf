"""The keyed permutation: a bijection of [0, n) for any n, seeded, epoch-dependent, O(1) memory."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trimodal.mixer.shuffle import BlockOrder, Permutation, derive_key, uniform


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5000), key=st.integers(0, 2**64 - 1))
def test_permutation_is_a_bijection(n, key):
    p = Permutation(n, key)(np.arange(n))
    assert sorted(p.tolist()) == list(range(n))


def test_permutation_is_deterministic_and_keyed():
    a = Permutation(10_000, derive_key(1, "web", 0, "order"))(np.arange(10_000))
    b = Permutation(10_000, derive_key(1, "web", 0, "order"))(np.arange(10_000))
    c = Permutation(10_000, derive_key(1, "web", 1, "order"))(np.arange(10_000))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # computed on any index range alone, without the rest (how a resumed run starts mid-epoch)
    p = Permutation(10_000, derive_key(1, "web", 0, "order"))
    assert np.array_equal(p(np.arange(4000, 4100)), a[4000:4100])
    # a shuffle, not a near-identity: few fixed points and neighbours far apart
    assert (a == np.arange(10_000)).sum() < 20
    assert np.median(np.abs(np.diff(a))) > 1000


def test_uniform_is_in_unit_interval_and_balanced():
    u = uniform(derive_key("reverse"), np.arange(100_000))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert abs((u < 0.25).mean() - 0.25) < 0.01


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6000),
    block=st.sampled_from([1, 7, 64, 1024]),
    window=st.integers(1, 9),
    key=st.integers(0, 2**64 - 1),
)
def test_block_order_visits_every_sample_once(n, block, window, key):
    o = BlockOrder(n, key, block, window)
    g = o(np.arange(o.domain))
    assert o.domain % (block * window) == 0 and o.domain >= n
    assert sorted(g[g >= 0].tolist()) == list(range(n))
    assert (g[g < 0] == -1).all()


def test_block_order_has_locality_and_is_still_shuffled():
    o = BlockOrder(100_000, derive_key(3), 1024, 4)
    g = o(np.arange(o.domain))
    g = g[g >= 0]
    for lo in range(0, len(g) - 512, 4096):  # any stretch of positions touches at most 4 blocks
        assert len(np.unique(g[lo : lo + 512] // 1024)) <= 4
    assert (g[:-1] + 1 == g[1:]).mean() < 0.01  # neighbours are not neighbours on disk
    assert len(np.unique(g[:4096] // 1024)) == 4 and np.ptp(np.unique(g[:4096] // 1024)) > 4  # blocks far apart
