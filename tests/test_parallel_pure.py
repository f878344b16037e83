"""Pure decomposition utilities (no MPI): k-means, eq. 8 loads, assignment, plan."""

import math

import numpy as np
import pytest

from radimg.parallel.balance import (
    assignment_from_boundaries,
    balanced_assignment,
    exclusive_offsets,
    field_lmax,
    load_per_rank,
    naive_assignment,
    sample_load,
    sample_order,
    sample_support,
    tile_ids,
    w_kernel_halfwidth,
)
from radimg.parallel.kmeans import kmeans_w
from radimg.parallel.plan import (
    BinnedSequence,
    fits_memory,
    paper_plan,
    paper_setup,
    paper_w_histogram,
    plan,
)
from radimg.parallel.redistribute import message_rounds

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- k-means


def test_kmeans_reflects_sorts_and_finds_clusters():
    rng = np.random.default_rng(0)
    true = np.array([10.0, 100.0, 400.0])
    w = np.concatenate([rng.normal(c, 1.0, 500) for c in true])
    w *= rng.choice([-1.0, 1.0], w.size)  # reflection: sign must not matter
    c, lab = kmeans_w(w, 3)
    assert np.all(np.diff(c) >= 0)
    np.testing.assert_allclose(c, true, atol=0.2)
    np.testing.assert_array_equal(lab, np.repeat([0, 1, 2], 500))


def test_kmeans_ignores_invalid_samples_and_multiplicity_equals_repeats():
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 300, 400)
    valid = rng.random(400) > 0.3
    junk = w.copy()
    junk[~valid] = 1e6  # would dominate a cluster if it were used
    c1, l1 = kmeans_w(junk, 5, valid=valid)
    c2, _ = kmeans_w(w[valid], 5)
    np.testing.assert_allclose(c1, c2, rtol=1e-12)
    assert l1.shape == (400,)
    # integer multiplicities == repeated samples
    mult = rng.integers(0, 4, 400)
    c3, _ = kmeans_w(w, 5, valid=mult)
    c4, _ = kmeans_w(np.repeat(w, mult), 5)
    np.testing.assert_allclose(c3, c4, rtol=1e-12)


def test_kmeans_empty_clusters_and_degenerate_data():
    # Fewer distinct values than clusters: no NaN, sorted, every sample labelled.
    w = np.array([5.0] * 10 + [50.0] * 10)
    c, lab = kmeans_w(w, 4)
    assert np.all(np.isfinite(c)) and np.all(np.diff(c) >= 0)
    assert set(np.unique(c[lab])) == {5.0, 50.0}
    # All flagged.
    c, lab = kmeans_w(np.ones(5), 3, valid=np.zeros(5, bool))
    assert c.shape == (3,) and np.all(lab == 0)
    # One cluster.
    c, lab = kmeans_w(np.arange(10.0), 1)
    assert c[0] == pytest.approx(4.5) and np.all(lab == 0)


# ---------------------------------------------------------------- eq. 8 loads


def test_support_derivation_and_rules():
    l_max = 0.3
    assert w_kernel_halfwidth(100.0, l_max) == pytest.approx(100.0 * 0.3 / math.sqrt(1 - 0.09))
    npcr = 0.8
    jw = math.ceil(2 * 100.0 * 0.3 / math.sqrt(1 - 0.09) * npcr)
    assert sample_support(100.0, 4, l_max, npcr) == max(4, jw)
    assert sample_support(-100.0, 4, l_max, npcr) == max(4, jw)  # |dw|
    assert sample_support(100.0, 4, l_max, npcr, combine="sum") == 4 + jw
    assert sample_support(0.0, 4, l_max, npcr) == 4
    s = sample_support(np.linspace(0, 500, 50), 4, l_max, npcr)
    assert s.dtype == np.int64 and np.all(np.diff(s) >= 0)
    load = sample_load(np.array([0.0, 100.0]), 4, l_max, npcr, valid=[True, False])
    assert load.tolist() == [16, 0]
    assert field_lmax(1024, 1024, math.radians(90 / 3600)) == pytest.approx(
        512 * math.sqrt(2) * math.radians(90 / 3600)
    )


# ---------------------------------------------------------------- assignment


@pytest.mark.parametrize("method", ["paper", "cuts"])
@pytest.mark.parametrize("n_ranks", [1, 2, 3, 7, 64])
def test_balanced_assignment_properties(method, n_ranks):
    rng = np.random.default_rng(n_ranks)
    load = rng.integers(16, 400, 20_000).astype(np.int64)
    load[rng.random(load.size) < 0.05] = 0  # flagged samples
    b = balanced_assignment(load, n_ranks, method=method)
    assert b.dtype == np.int64 and b.shape == (n_ranks + 1,)
    assert b[0] == 0 and b[-1] == load.size and np.all(np.diff(b) >= 0)
    dest = assignment_from_boundaries(b)
    # every sample exactly once
    assert np.bincount(dest, minlength=n_ranks).sum() == load.size
    per = load_per_rank(load, dest, n_ranks)
    assert per.sum() == load.sum()
    mean = load.sum() / n_ranks
    if method == "paper":
        assert np.all(per[:-1] <= load.sum() // n_ranks)  # all but the last at most the mean
        assert per[-1] <= mean + n_ranks * load.max()
    else:
        assert np.all(np.abs(per - mean) <= load.max())
    assert per.max() / mean < 1.0 + n_ranks * load.max() / mean


def test_balanced_assignment_oversized_samples_and_empty():
    b = balanced_assignment(np.array([1, 1000, 1, 1], np.int64), 3)
    assert b.tolist()[0] == 0 and b[-1] == 4 and np.all(np.diff(b) >= 0)
    b = balanced_assignment(np.zeros(0, np.int64), 4)
    assert b.tolist() == [0, 0, 0, 0, 0]
    b = balanced_assignment(np.zeros(5, np.int64), 2)
    assert b[0] == 0 and b[-1] == 5


def test_naive_assignment_is_stack_mod_ranks():
    st = np.array([0, 1, 2, 3, 4, 5, 5, 0])
    np.testing.assert_array_equal(naive_assignment(st, 4), [0, 1, 2, 3, 0, 1, 1, 0])


def test_order_by_stack_then_tile():
    st = np.array([1, 0, 1, 0, 2])
    tl = tile_ids(np.array([10.0, -500.0, -10.0, 300.0, 0.0]), np.zeros(5), 1024, 1024, 64)
    o = sample_order(st, tl)
    assert st[o].tolist() == [0, 0, 1, 1, 2]
    assert tl[o][0] < tl[o][1] and tl[o][2] < tl[o][3]


def test_64bit_offsets_do_not_overflow():
    """n_ranks * K > 2**32 (paper sec. 4.2): offsets and loads stay exact in int64."""
    n_ranks, K = 1024, 2**23  # 2**33 grid cells in total
    off = exclusive_offsets(np.full(n_ranks, K))
    assert off.dtype == np.int64 and off[-1] == n_ranks * K and off[-1] > 2**32
    big = np.full(4, 2**40, np.int64)
    b = balanced_assignment(big, 2)
    assert b.tolist() == [0, 2, 4]
    assert load_per_rank(big, [0, 0, 1, 1], 2).tolist() == [2**41, 2**41]


def test_message_rounds_split():
    cap, rounds = message_rounds([10, 0, 3], row_bytes=8, size=3, max_message_bytes=100)
    assert cap == 4  # 100 // (8 * 3)
    assert rounds.tolist() == [[4, 0, 3], [4, 0, 0], [2, 0, 0]]
    assert np.all(rounds.sum(axis=1) * 8 <= 100)
    cap, rounds = message_rounds([5], row_bytes=1000, size=1, max_message_bytes=10)
    assert cap == 1 and rounds.shape == (5, 1)  # at least one item per round


# ---------------------------------------------------------------- plan


def test_binned_sequence_matches_sample_level_assignment():
    """Fractional bin splits == balanced_assignment on the materialised samples."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 50, 200)
    load = rng.integers(16, 300, 200)
    seq = BinnedSequence(counts, load)
    flat = np.repeat(load, counts)
    ends = np.concatenate([[0], np.cumsum(flat)])
    for n in (1, 2, 5, 17, 300):
        for method, cuts in (("paper", seq.greedy_cuts), ("cuts", seq.midpoint_cuts)):
            B = cuts(n)
            bi = balanced_assignment(flat, n, method=method)
            np.testing.assert_array_equal(B, ends[bi], err_msg=method)
            np.testing.assert_array_equal(seq.samples_before(B), bi, err_msg=method)


def test_plan_fields_and_memory_check():
    rng = np.random.default_rng(5)
    w = rng.normal(0, 200, 50_000)
    p = plan(n_ranks=4, npix=256, cell_arcsec=120.0, J_min=4, w=w, nbins=5000, mem_per_rank=2**30)
    for s in ("balanced", "naive"):
        sch = p[s]
        for key in ("load_per_rank", "samples_per_rank", "memory_per_rank_bytes"):
            assert len(sch[key]) == 4
        assert sum(sch["samples_per_rank"]) == 50_000
        assert sch["max_over_mean"] >= 1.0
        assert set(sch["memory_breakdown"]) == {
            "samples",
            "grid_tiles",
            "stack_grids",
            "images",
            "kernels",
            "code",
        }
        assert sch["comm_bytes_per_apply"] >= 0
    assert sum(p["balanced"]["load_per_rank"]) == sum(p["naive"]["load_per_rank"])
    assert p["naive"]["comm_breakdown"]["alltoall_tiles_bytes"] == 0
    assert len(p["stacks"]["centres_lambda"]) == 4
    assert p["fits"] is True and "fits" in p["memory_message"]
    ok, msg = fits_memory(p, 1000)
    assert not ok and "DOES NOT FIT" in msg and "samples" in msg


def test_paper_histogram():
    edges, counts = paper_w_histogram(1000)
    assert counts.sum() == paper_setup()["n_samples"] and counts.dtype == np.int64
    assert edges[0] == 0 and edges[-1] == 600.0 and np.all(np.diff(counts) <= 0)


@pytest.mark.parametrize("n_ranks", [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
def test_paper_setup_balanced_within_one_percent(n_ranks):
    p = paper_plan(n_ranks, nbins=20_000)
    bal, nai = p["balanced"], p["naive"]
    assert bal["max_over_mean"] <= 1.01
    assert nai["max_over_mean"] >= bal["max_over_mean"]
    assert sum(bal["samples_per_rank"]) == 2_000_000_000
    assert all(isinstance(x, int) for x in bal["load_per_rank"])
    paper = paper_plan(n_ranks, nbins=20_000, method="paper")["balanced"]
    loads = np.array(paper["load_per_rank"])
    assert np.all(loads[:-1] <= loads.sum() // n_ranks)  # paper: only the last may overfill
    assert paper["max_over_mean"] <= 1.01


@pytest.mark.parametrize("n_ranks", [2, 16, 1024])
def test_paper_distribution_1e4_samples_per_rank(n_ranks):
    """The paper's w/uv set-up scaled down to 10**4 samples per rank: cuts stay <= 1.01."""
    edges, counts = paper_w_histogram(20_000, {**paper_setup(), "n_samples": 10_000 * n_ranks})
    p = plan(n_ranks=n_ranks, npix=1024, cell_arcsec=90.0, J_min=4, w_hist=(edges, counts))
    assert p["balanced"]["max_over_mean"] <= 1.01


def test_cuts_vs_paper_rule_on_eq8_loads():
    """10**4 samples per rank, eq. 8 loads of a Gaussian w (one sample up to ~2 % of a rank).

    ``cuts`` stays within one sample's load of the mean everywhere; the paper's greedy fill
    keeps ranks 0..n-2 under the mean, so their shortfalls pile up on the last rank, bounded
    by (n - 1) * max(load).
    """
    rng = np.random.default_rng(9)
    n_ranks = 16
    w = np.abs(rng.normal(0, 200, n_ranks * 10_000))
    c, lab = kmeans_w(w, n_ranks)
    order = sample_order(lab)
    load = sample_load(w - c[lab], 4, 0.3, 0.9)[order]
    per = {}
    for method in ("paper", "cuts"):
        b = balanced_assignment(load, n_ranks, method=method)
        per[method] = load_per_rank(load, assignment_from_boundaries(b), n_ranks)
    mean = load.sum() / n_ranks
    assert np.all(np.abs(per["cuts"] - mean) <= load.max())
    assert np.all(per["paper"][:-1] <= mean)
    assert per["paper"][-1] - mean <= (n_ranks - 1) * load.max()
    assert per["cuts"].max() <= per["paper"].max()


@pytest.mark.parametrize("source", ["simulate", "ms"])
def test_plan_from_config(source):
    from radimg.config import resolve
    from radimg.parallel.plan import plan_from_config

    if source == "ms":
        from data_paths import MWA_MS, pyuvdata_ms

        cfg = resolve(overrides=[f"input.ms={pyuvdata_ms(MWA_MS)}", "image.npix=512"])
    else:
        cfg = resolve(overrides=["input.simulate=true", "image.npix=512"])
    p = plan_from_config(cfg, 3, mem_per_rank_bytes=8 * 2**30)
    assert p["n_ranks"] == 3 and p["n_samples"] > 0 and p["fits"] is True
    assert len(p["balanced"]["load_per_rank"]) == 3
    assert p["balanced"]["max_over_mean"] <= p["naive"]["max_over_mean"] + 1e-12
    if source == "ms":
        # the rows a run images x channels: the 7381 rows less 121 autocorrelations
        assert p["n_samples"] == 7260 * 10


def test_exchange_tiles_hold_any_footprint_in_two():
    """wstack-wproject exchange tiles (radimg.parallel.operator.even_bounds): each tile is
    at least ``tile`` cells when there are several, so any wrapped run of <= tile cells
    meets at most two tiles and the 2 x 2 marking of M_jk covers it (brute force)."""
    from radimg.parallel.operator import even_bounds, tile_of

    rng = np.random.default_rng(11)
    for _ in range(40):
        n = int(rng.integers(20, 700))
        t = int(rng.integers(3, n + 5))
        b = even_bounds(n, t)
        assert b[0] == 0 and b[-1] == n and np.all(np.diff(b) > 0)
        if b.size > 2:
            assert np.diff(b).min() >= t
        cell_tile = tile_of(np.arange(n), b)
        for j in rng.integers(0, n, 30):
            length = int(rng.integers(1, min(t, n) + 1))
            run = (j + np.arange(length)) % n
            seen = set(cell_tile[run].tolist())
            assert seen <= {int(cell_tile[j]), int(cell_tile[(j + length - 1) % n])}


def test_exchange_rounds_fit_the_cap():
    """radimg.parallel.operator.exchange_rounds: contiguous plane ranges covering every
    plane once; in each round every rank's send and receive cells stay within the cap
    unless the round is a single plane; adding the next plane to a round would exceed it
    (greedy, so no round is needlessly cut); None is one round."""
    from radimg.parallel.operator import exchange_rounds

    rng = np.random.default_rng(3)
    send = rng.integers(0, 50, (40, 3))
    recv = rng.integers(0, 50, (40, 3))
    send[7] = 500  # one plane above the cap alone
    assert list(exchange_rounds(send, recv, None)) == [0, 40]
    b = exchange_rounds(send, recv, 120)
    assert b[0] == 0 and b[-1] == 40 and np.all(np.diff(b) >= 1)
    for lo, hi in zip(b[:-1], b[1:]):
        s, r = send[lo:hi].sum(0), recv[lo:hi].sum(0)
        assert (s.max() <= 120 and r.max() <= 120) or hi - lo == 1
        if hi < 40:
            s2, r2 = send[lo:hi + 1].sum(0), recv[lo:hi + 1].sum(0)
            assert s2.max() > 120 or r2.max() > 120
    assert [7, 8] in [[lo, hi] for lo, hi in zip(b[:-1], b[1:])]
    assert len(exchange_rounds(np.zeros((5, 2)), np.zeros((5, 2)), 1)) == 2  # nothing travels
