"""``radimg plan`` for cubes (``image.channels_out`` > 1 or several ``image.stokes``
products): one plan per output channel, and the peak per rank over them.

``radimg run`` images a cube's output channels one after another (radimg.pipeline.cube),
on all ranks or, with ``resources.channel_groups`` G > 1 (radimg.parallel.groups), on G
groups of ranks at once, output channel ``c`` on group ``c mod G``: for a dirty cube one
operator, built on one output channel's samples, is alive at a time on a rank, shared by
that channel's Stokes products where their flags allow, and one product's moved samples at
a time. So a rank's peak is the largest plan of its group's channels
(:func:`radimg.parallel.plan.plan_from_config` on that channel's columns of the sample, for
the group's ranks; 0 on the ranks of other groups) plus what the cube keeps for the whole
run:

- the read visibilities and data weights of every product and channel, in read order
  (this rank's share of the rows: rows / ranks),
- the cube's images, replicated on every rank: dirty and PSF (stokes, channel, y, x) and
  their MFS images (stokes, y, x), float64.

A joined deconvolution (``deconvolution.join_channels`` / ``join_polarizations``) keeps
every image's backend alive for the major cycles; its peak is then the sum over output
channels and products of the samples terms, which the ``joined`` line states.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cube_plan", "format_cube_plan"]


def _selection_freq(cfg):
    """The selection's ascending frequency axis (Hz) as ``radimg run`` reads it."""
    inp = cfg["input"]
    if inp.get("simulate"):
        from radimg.sim.simulate import resolve_sim_config

        sim = resolve_sim_config(dict(cfg.get("simulate", {})))
        return float(sim["freq_hz"]) + np.arange(int(sim["nchan"])) * float(
            sim["chan_width_hz"])
    from radimg.io.ms import uvw_subsample

    _, _, freq = uvw_subsample(
        inp["ms"], inp.get("spw", 0), inp.get("field", 0), max_rows=16,
        autocorrelations=bool(inp.get("autocorrelations", False)),
        chan_range=inp.get("chan_range"), phase_centre=cfg["image"].get("phase_centre"),
    )
    return np.sort(np.asarray(freq, dtype=np.float64))


def cube_plan(cfg: dict, n_ranks: int, mem_per_rank_bytes: int | None = None) -> dict | None:
    """Per-output-channel plans of a cube and the peak per rank over them; None when the
    config makes a single image (one product, one output channel).

    Returns
    -------
    dict
        ``products`` (names), ``channels_out``, ``channels`` (one dict per output channel:
        ``chan`` (first, stop) of the selection's axis, ``freq_hz``, ``samples``,
        ``group`` and ``ranks`` (the ranks imaging it), ``samples_per_rank``,
        ``stacks_per_rank`` (the w-stacks/planes each rank owns; 0 outside the channel's
        group), ``stack_owner_rank``, ``memory_per_rank_bytes`` (that channel's operator and one
        product's samples), ``comm_bytes_per_apply``), ``resident_per_rank_bytes`` (the
        read data and the cube's images, held for the whole run), ``peak_per_rank_bytes``
        (the largest channel of the rank's group plus resident), ``peak_channel``,
        ``channel_groups`` and ``joined_per_rank_bytes`` (every image's samples kept, as a
        joined deconvolution does, which always uses one group).
    """
    from radimg.config import stokes_products
    from radimg.parallel.groups import group_members, resolve_groups
    from radimg.parallel.plan import plan_from_config

    img = cfg["image"]
    products = stokes_products(img.get("stokes", "I"))
    nc = int(img.get("channels_out", 1) or 1)
    if nc == 1 and len(products) == 1:
        return None
    freq = _selection_freq(cfg)
    n = freq.size
    if not 1 <= nc <= n:
        return None  # radimg run refuses it (image.channels_out); the plan says nothing more
    npix_x = int(img["npix"])
    npix_y = int(img.get("npix_y") or npix_x)
    single = (cfg.get("gridder") or {}).get("precision", "single") == "single"
    vis_bytes = (8 + 4) if single else (16 + 8)  # vis + data weight per product sample
    dcfg = cfg.get("deconvolution") or {}
    joined = dcfg.get("algorithm", "none") != "none" and bool(
        dcfg.get("join_channels") or dcfg.get("join_polarizations"))
    ngroups = resolve_groups((cfg.get("resources") or {}).get("channel_groups", "auto"),
                             n_ranks, nc, joined)
    chans, total_samples = [], 0
    for k in range(nc):
        a, b = k * n // nc, (k + 1) * n // nc
        members = group_members(n_ranks, ngroups, k % ngroups)
        p = plan_from_config(cfg, len(members), mem_per_rank_bytes, channels=(a, b))
        bal = p["balanced"]
        total_samples += int(p["n_samples"])

        def world(xs, members=members):  # the group's per-rank figures on all ranks
            out = [0] * n_ranks
            for r, x in zip(members, xs, strict=True):
                out[r] = int(x)
            return out

        chans.append({
            "chan": [a, b],
            "freq_hz": float((freq[a] + freq[b - 1]) / 2),
            "group": k % ngroups,
            "ranks": members,
            "samples": int(p["n_samples"]),
            "samples_per_rank": world(bal["samples_per_rank"]),
            "stacks_per_rank": world(bal["stacks_per_rank"]),
            "stack_owner_rank": [members[int(x)] for x in p["stacks"]["owner_rank"]],
            "nstacks": int(p["stacks"]["nstacks"]),
            "mode": p["wterm"]["mode"],
            "memory_per_rank_bytes": world(bal["memory_per_rank_bytes"]),
            "sample_memory_per_rank_bytes": world(bal["memory_breakdown"]["samples"]),
            "comm_bytes_per_apply": int(bal["comm_bytes_per_apply"]),
        })
    ns = len(products)
    read = int(np.ceil(total_samples / n_ranks)) * ns * vis_bytes
    images = 8 * npix_x * npix_y * (2 * ns * nc + 2 * ns)
    resident = [read + images] * n_ranks
    per_rank = np.array([c["memory_per_rank_bytes"] for c in chans], dtype=np.int64)
    peak = per_rank.max(axis=0) + np.asarray(resident, dtype=np.int64)
    samples_terms = np.array([c["sample_memory_per_rank_bytes"] for c in chans],
                             dtype=np.int64)
    joined = per_rank.max(axis=0) + ns * samples_terms.sum(axis=0) + np.asarray(resident)
    return {
        "products": products,
        "channels_out": nc,
        "channels": chans,
        "resident_per_rank_bytes": [int(x) for x in resident],
        "peak_per_rank_bytes": [int(x) for x in peak],
        "peak_channel": int(per_rank.max(axis=1).argmax()),
        "channel_groups": int(ngroups),
        "joined_per_rank_bytes": [int(x) for x in joined],
    }


def format_cube_plan(cube: dict) -> str:
    """The cube section of ``radimg plan``'s text: one row per output channel."""
    from radimg.progress import format_bytes

    def ranks(xs, f=str):
        return " / ".join(f(x) for x in xs)

    groups = cube.get("channel_groups", 1)
    how = ("imaged one after another" if groups == 1 else
           f"imaged by {groups} groups of ranks at once, output channel c on group c mod "
           f"{groups} (resources.channel_groups)")
    lines = [
        f"cube: Stokes {' '.join(cube['products'])}; {cube['channels_out']} output "
        f"channel(s), {how} (one operator per output channel, shared by its products where "
        "their flags allow)",
        "  out  ranks    MHz        samples     samples per rank       stacks per rank  "
        "memory per rank (operator + 1 product)  traffic per apply  w-term",
    ]
    for k, c in enumerate(cube["channels"]):
        rk = c.get("ranks") or []
        rk = f"{rk[0]}-{rk[-1]}" if len(rk) > 1 else (str(rk[0]) if rk else "all")
        lines.append(
            f"  {k:<4d} {rk:<8} {c['freq_hz'] / 1e6:<10.4f} {c['samples']:<11,d} "
            f"{ranks(c['samples_per_rank'], lambda x: f'{x:,d}'):<22} "
            f"{ranks(c['stacks_per_rank']):<16} "
            f"{ranks(c['memory_per_rank_bytes'], format_bytes):<39} "
            f"{format_bytes(c['comm_bytes_per_apply']):<18} {c['mode']} ({c['nstacks']})")
    lines.append("  held for the whole run (read data of every product and channel, "
                 "the cube's images): " + ranks(cube["resident_per_rank_bytes"], format_bytes))
    lines.append(f"  peak per rank (output channel {cube['peak_channel']} + held): "
                 + ranks(cube["peak_per_rank_bytes"], format_bytes))
    lines.append("  with a joined deconvolution (every image's samples kept): "
                 + ranks(cube["joined_per_rank_bytes"], format_bytes))
    return "\n".join(lines) + "\n"
