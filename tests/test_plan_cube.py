"""``radimg plan`` for cubes (issue #15 item 5): one plan per output channel. Oracle: the
plan of output channel k equals the single-image plan of the same channels selected with
``input.chan_range`` (so the per-channel column slicing of the sample is right), and the
peak per rank is the largest channel plus what the cube holds for the whole run."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from data_paths import MWA_MS, pyuvdata_ms  # noqa: E402

pytestmark = pytest.mark.unit
pytest.importorskip("casacore.tables")


def _cfg(ms, groups=1, **image):
    from radimg.config import resolve

    return resolve(yaml_text=yaml.safe_dump({
        "input": {"ms": str(ms)},
        "image": {"npix": 128, "cell_arcsec": 120.0, **image},
        "wterm": {"mode": "wstack", "epsilon": 1e-5},
        "deconvolution": {"algorithm": "none"},
        "resources": {"channel_groups": groups},
    }))


def test_cube_plan_per_output_channel_equals_a_chan_range_plan():
    from radimg.parallel.plan import plan_from_config
    from radimg.parallel.plan_cube import cube_plan, format_cube_plan

    ms = pyuvdata_ms(MWA_MS)  # 10 channels in one window: output channels (0, 5), (5, 10)
    assert cube_plan(_cfg(ms), 2) is None  # one Stokes I image: no cube
    cube = cube_plan(_cfg(ms, stokes="IQUV", channels_out=2), 2)
    assert [c["chan"] for c in cube["channels"]] == [[0, 5], [5, 10]]
    for k, (a, b) in enumerate(([0, 4], [5, 9])):
        cfg = _cfg(ms)
        cfg["input"]["chan_range"] = [a, b]
        one = plan_from_config(cfg, 2)
        got = cube["channels"][k]
        assert got["samples"] == one["n_samples"]
        assert got["samples_per_rank"] == one["balanced"]["samples_per_rank"]
        assert got["memory_per_rank_bytes"] == one["balanced"]["memory_per_rank_bytes"]
        assert got["stack_owner_rank"] == one["stacks"]["owner_rank"]
    per = np.array([c["memory_per_rank_bytes"] for c in cube["channels"]])
    np.testing.assert_array_equal(
        cube["peak_per_rank_bytes"], per.max(axis=0) + cube["resident_per_rank_bytes"])
    # the cube's replicated images: dirty and PSF (4, 2, 128, 128) and MFS (4, 128, 128)
    assert min(cube["resident_per_rank_bytes"]) > 8 * 128 * 128 * (2 * 4 * 2 + 2 * 4)
    text = format_cube_plan(cube)
    assert "2 output channel(s)" in text and "peak per rank" in text


def test_cube_plan_with_channel_groups_plans_each_channel_on_its_group():
    """resources.channel_groups (auto: 2 groups at 2 ranks, 2 output channels): output
    channel k is planned for group k's one rank (the single-image plan of its channels at
    one rank), 0 on the other rank, and a rank's peak is its own channel plus what the cube
    holds; 3 groups at 2 ranks is refused as radimg run refuses it."""
    from radimg.config import ConfigError
    from radimg.parallel.plan import plan_from_config
    from radimg.parallel.plan_cube import cube_plan, format_cube_plan

    ms = pyuvdata_ms(MWA_MS)
    cube = cube_plan(_cfg(ms, groups="auto", stokes="IQUV", channels_out=2), 2)
    assert cube["channel_groups"] == 2
    for k, (a, b) in enumerate(([0, 4], [5, 9])):
        cfg = _cfg(ms)
        cfg["input"]["chan_range"] = [a, b]
        one = plan_from_config(cfg, 1)
        got = cube["channels"][k]
        assert got["ranks"] == [k] and got["group"] == k
        want = [0, 0]
        want[k] = one["balanced"]["memory_per_rank_bytes"][0]
        assert got["memory_per_rank_bytes"] == want
        assert got["stack_owner_rank"] == [k] * len(one["stacks"]["owner_rank"])
        assert got["samples_per_rank"][1 - k] == 0
    per = np.array([c["memory_per_rank_bytes"] for c in cube["channels"]])
    np.testing.assert_array_equal(
        cube["peak_per_rank_bytes"], per.max(axis=0) + cube["resident_per_rank_bytes"])
    assert "2 groups of ranks" in format_cube_plan(cube)
    with pytest.raises(ConfigError, match="resources.channel_groups = 3"):
        cube_plan(_cfg(ms, groups=3, stokes="I", channels_out=2), 2)
