"""Stage *deconvolve*: CLEAN (Cotton-Schwab major cycles, radimg.deconv.major) or ADMM
(radimg.deconv.admm) on the imaging backend, then the restored image.

Both drivers run their loop through one :class:`MajorLoop`, which owns what they share: the
progress line, the checkpoint after each major cycle (ADMM: every ``checkpoint_every``
iterations), the collective stop check after it, the test fault point, and the end of an
interrupted run (a complete checkpoint, then :class:`JobInterrupted` on every rank).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from radimg.pipeline.common import JobInterrupted, collective_check
from radimg.progress import Progress


@dataclass
class Deconvolved:
    """What deconvolution adds to the product: ``images`` (``model``, ``residual``,
    ``restored``; ``restored`` on rank 0 only) and ``summary`` (``deconvolution_json``)."""

    images: dict
    summary: dict

    @property
    def stopped_early(self) -> bool:
        """deconvolution.stop_after_major ended the loop: the product is not final."""
        return bool(self.summary["stopped_early"])

    def run_attrs(self):
        return {"deconvolution_json": json.dumps(self.summary)}


def deconvolve(job, backend, geom, psf, dirty, beam, wcs_info):
    """CLEAN or ADMM from the dirty image and PSF, restored with ``beam`` (fitted when the
    PSF was made); collective. Returns :class:`Deconvolved`."""
    from radimg.deconv.checkpoint import read_checkpoint
    from radimg.deconv.image import restore
    from radimg.parallel.mpi import bcast_array

    comm = job.comm
    checkpoint = None
    if job.resume:
        checkpoint = read_checkpoint(job.checkpoint_path, row_id=backend.row_id,
                                     vis_names=("z",))
        job.log(f"resuming from {job.checkpoint_path}: {checkpoint['counters']}")
    driver = clean if job.cfg["deconvolution"]["algorithm"] == "clean" else admm
    model, residual, summary = driver(job, backend, geom, psf, dirty, wcs_info, checkpoint)
    if summary["stopped_early"]:
        job.log(
            f"stopped early as deconvolution.stop_after_major asks; continue with --resume "
            f"(checkpoint {job.checkpoint_path})"
        )
    with job.timer.stage("restore"):
        restored = restore(model, residual, beam, geom.cell_deg) if comm.rank == 0 else None
    model = bcast_array(comm, np.ascontiguousarray(model, dtype=np.float64))
    images = {"model": model, "residual": residual, "restored": restored}
    return Deconvolved(images, summary)


class MajorLoop:
    """The checkpoint-progress-interrupt helper both drivers hand to their loop.

    Parameters
    ----------
    job : radimg.pipeline.context.Job
    wcs_info : dict, stored with every checkpoint
    label : str, the progress line's unit (``major cycle``, ``ADMM iteration``)
    total, done : int, the loop's length and the steps a resumed run has done
    counter : str, the timing table's counter of steps (``major cycles``, ...)
    contents : callable ``state -> dict``, the driver's part of
        :func:`radimg.deconv.checkpoint.write_checkpoint`'s arguments (image, counters,
        arrays ...)
    position : callable ``state -> tuple``, where in the loop ``state`` is (a checkpoint of
        the same position is not written twice)
    """

    def __init__(self, job, wcs_info, *, label, total, done, counter, contents, position):
        from radimg.config import to_yaml

        dcfg = job.cfg["deconvolution"]
        self.job, self.wcs_info = job, wcs_info
        self.counter, self.contents, self.position = counter, contents, position
        self.enabled = bool(job.cfg["output"]["checkpoint"]) or dcfg["stop_after_major"] > 0
        self.written_at = None  # position of the latest checkpoint written
        self.run_attrs = {
            "config_yaml": to_yaml(job.cfg),
            "n_ranks": job.comm.size,
            "timings_json": "{}",
            "load_balance_json": "{}",
        }
        self.progress = Progress(job.rank, total, label, verbose=job.verbose)
        self.progress.n = done

    def step_begins(self):
        """Before each step's operator work: the test fault point ``major``."""
        self.job.fault_point("major")

    def step_done(self):
        self.job.timer.count(self.counter)
        self.progress.update(1)

    def note(self, msg):
        """A line from the loop, under the progress line."""
        self.progress.note(msg, level=1, labelled=False)

    def stop_requested(self):
        # Collective (the loop calls it on every rank after a checkpoint): Allreduce(MAX)
        # of the stop-signal flags, so every rank stops after the same step.
        return self.job.signals.stop_requested()

    def on_checkpoint(self, state):
        """The loop's checkpoint hook: writes one when the run keeps checkpoints."""
        if self.enabled:
            self.write(state)

    def write(self, state):
        """Write the checkpoint of ``state`` (collective; stage ``checkpoint``)."""
        from radimg.deconv.checkpoint import write_checkpoint

        job = self.job
        with job.timer.stage("checkpoint"):
            write_checkpoint(job.comm, job.checkpoint_path, wcs_info=self.wcs_info,
                             run_attrs=self.run_attrs, **self.contents(state))
        self.written_at = self.position(state)

    def finish(self, state, where):
        """Close the progress line; after a stop signal, make sure the checkpoint holds
        ``state`` and raise :class:`JobInterrupted` (``where``: the step, for the message)."""
        if state.get("interrupted"):
            end = "(interrupted)"
        else:
            end = "(stopped early)" if state.get("stopped") else "(done)"
        self.progress.close(end)
        if not state.get("interrupted"):
            return
        if self.written_at != self.position(state):
            self.write(state)
        job = self.job
        raise JobInterrupted(
            f"stopped by {job.signals.signal_name()} after {where}; the checkpoint "
            f"{job.checkpoint_path} is complete",
            signal_name=job.signals.signal_name(),
            checkpoint=job.checkpoint_path,
            rank=job.rank,
        )


def clean(job, backend, geom, psf, dirty, wcs_info, checkpoint):
    """Cotton-Schwab CLEAN (radimg.deconv.major.cotton_schwab). Returns ``(model, residual,
    summary)``."""
    from radimg.deconv.major import cotton_schwab, new_clean_state
    from radimg.parallel.mpi import ranks_on_root_node
    from radimg.pipeline.preflight import check_mask

    comm, dcfg = job.comm, job.cfg["deconvolution"]
    user_mask = collective_check(comm, check_mask, job.cfg)
    # A CLEAN model has few components: predict them by a direct Fourier transform while
    # that is faster than the gridded op.dot (radimg.deconv.predict; the same choice on
    # every rank). Not where the samples stay on a device (the residual is made there).
    predict, chooser = backend.predict, None
    if dcfg.get("predict", "auto") != "operator" and backend.samples_on_host:
        from radimg.deconv.predict import MajorPredict

        chooser = MajorPredict(backend.op, geom.cell_rad, comm=comm, nthreads=job.nthreads,
                               dtype=backend.vis.dtype, mode=dcfg.get("predict", "auto"))

        def predict(model):
            return backend.predict(model, by=chooser)

    if checkpoint is None:
        state, residual = new_clean_state(geom.shape), dirty.copy()
    else:
        state = _clean_state(checkpoint)
        residual = backend.residual(state["model"], predict)

    loop = MajorLoop(job, wcs_info, label="major cycle", total=dcfg["nmajor"],
                     done=state["nmajor"], counter="major cycles", contents=_clean_contents,
                     position=lambda st: ("clean", st["nmajor"], st["iters"]))

    def cycle_residual(model):
        loop.step_begins()
        residual = backend.residual(model, predict)
        loop.step_done()
        return residual

    model, residual, state = cotton_schwab(
        cycle_residual, residual, psf, dcfg, comm=comm, user_mask=user_mask, state=state,
        on_checkpoint=loop.on_checkpoint, stop_check=loop.stop_requested, log=loop.note,
        minor_threads=job.nthreads * ranks_on_root_node(comm),
    )
    if chooser is not None:
        job.timer.set_counter("predicts by DFT", chooser.used["dft"])
    loop.finish(state, f"major cycle {state['nmajor']}")
    summary = {
        "algorithm": "clean",
        "major_cycles": state["nmajor"],
        "components": state["iters"],
        "stopped_early": state["stopped"],
    }
    job.log(f"CLEAN: {state['iters']} components in {state['nmajor']} major cycles")
    return model, residual, summary


def _clean_state(checkpoint):
    """The CLEAN state a checkpoint holds."""
    counters = checkpoint["counters"]
    auto_mask = checkpoint["extras"].get("auto_mask")
    return {
        "model": checkpoint["image"],
        "nmajor": int(counters["nmajor"]),
        "iters": int(counters["iters"]),
        "auto_mask": None if auto_mask is None else np.asarray(auto_mask).astype(bool),
        "done": bool(counters["done"]),
        "reached": counters.get("reached"),  # absent in checkpoints before the stop rule
    }


def _clean_contents(state):
    """write_checkpoint's arguments for a CLEAN state."""
    auto_mask = state["auto_mask"]
    return {
        "image": state["model"],
        "counters": {
            "algorithm": "clean",
            "nmajor": state["nmajor"],
            "iters": state["iters"],
            "done": state["done"],
            "reached": state["reached"],
        },
        "arrays": {} if auto_mask is None else {"auto_mask": auto_mask.astype(np.uint8)},
    }


def admm(job, backend, geom, psf, dirty, wcs_info, checkpoint):
    """ADMM with SARA sparsity and the l2 data-fidelity ball (radimg.deconv.admm.admm) on the
    whitened operator. Returns ``(model, residual, summary)``."""
    from radimg.deconv.admm import SARA, epsilon_bound, power_norm
    from radimg.deconv.admm import admm as run_admm

    comm, dcfg, shape = job.comm, job.cfg["deconvolution"], geom.shape
    sw = _whitening(job, backend, dcfg["admm_sigma_jy"])
    n_samples = comm.allreduce(int(np.count_nonzero(sw)))
    eps = epsilon_bound(n_samples)
    y_w = backend.whiten(sw)
    if checkpoint is None:
        eps = _admm_bound(job, backend, psf, dirty, y_w, eps)
    else:
        eps = float(checkpoint["counters"].get("eps", eps))
    sara = SARA(shape, levels=dcfg["admm_levels"], comm=comm)
    state = None
    if checkpoint is None:
        power = {}
        with job.timer.stage("power method"):
            op_norm = power_norm(backend.forward_whitened, backend.adjoint_whitened, shape,
                                 comm=comm, niter=dcfg["admm_power_iters"], info=power)
        job.log(f"ADMM: power method {power['iters']} iterations (last relative change "
                f"{power['rel_change']:.1e})")
    else:
        op_norm = float(checkpoint["counters"]["op_norm"])
        state = _admm_state(checkpoint, backend, sara, y_w.dtype)
    job.log(f"ADMM: ||Phi_w||^2 = {op_norm:.6g}, epsilon = {eps:.6g} ({n_samples} samples)")

    def contents(st):
        return _admm_contents(st, op_norm, backend, sara, eps)

    loop = MajorLoop(job, wcs_info, label="ADMM iteration", total=dcfg["niter"],
                     done=0 if state is None else state["it"], counter="ADMM iterations",
                     contents=contents, position=lambda st: ("admm", st["it"], st["round"]))
    forward_calls = 0

    def forward(x):
        # admm() calls the forward operator once before its loop, then once per iteration
        nonlocal forward_calls
        forward_calls += 1
        if forward_calls > 1:
            loop.step_begins()
        vis = backend.forward_whitened(x)
        if forward_calls > 1:
            loop.step_done()
        return vis

    model, state = run_admm(
        forward, backend.adjoint_whitened, y_w, shape, eps=eps, op_norm=op_norm, comm=comm,
        sara=sara, niter=dcfg["niter"], tol=dcfg["admm_tol"], kappa=dcfg["admm_kappa"],
        dual_iters=dcfg["admm_dual_iters"], reweights=dcfg["admm_reweights"], state=state,
        checkpoint_every=dcfg["checkpoint_every"] if loop.enabled else 0,
        on_checkpoint=loop.on_checkpoint, stop_after=dcfg["stop_after_major"],
        stop_check=loop.stop_requested, log=loop.note, xp=backend.xp,
    )
    loop.finish(state, f"ADMM iteration {state['it']}")
    residual = backend.residual(model)
    summary = {
        "algorithm": "admm",
        "iterations": state["it"],
        "epsilon": eps,
        "op_norm": op_norm,
        "stopped_early": state["stopped"],
        "converged": state["done"],
    }
    job.log(f"ADMM: {state['it']} iterations, converged {state['done']}")
    return model, residual, summary


#: Components the bound's reference CLEAN may add (``deconvolution.niter`` counts ADMM's
#: iterations in an ADMM run, not CLEAN components).
BOUND_CLEAN_NITER = 100_000


def _admm_bound(job, backend, psf, dirty, y_w, eps_noise):
    """ADMM's l2 bound: the noise's, or, where the image cannot hold most of what the data
    see, what this config's CLEAN leaves (:func:`radimg.deconv.admm.model_bound`). Logged
    either way.

    The reference model is the CLEAN a run of the same config with ``algorithm: clean``
    makes (Cotton-Schwab major cycles with its ``gain``, ``mgain``, ``threshold_jy``,
    ``auto_threshold`` (3 when it and ``threshold_jy`` are 0), ``auto_mask``, minor cycle and
    scales; up to :data:`BOUND_CLEAN_NITER` components), so ADMM fits the data as well as
    that CLEAN does. ADMM returns the least-flux image inside its ball (for ``x >= 0`` the
    Dirac part of SARA's l1 norm is the total flux / 3), so its flux and residual mean follow
    the reference's depth. Issue #16, real MWA 512 x 1', natural: the bound used to come from
    one Hogbom cycle to ``auto_threshold`` sigma whatever ``auto_mask`` said; to 3 sigma
    (209 Jy; the CLEAN run: 218 Jy, residual mean 0.130 of its rms) ADMM held 243-252 Jy
    and left a residual mean of 0.12 rms. With the MWA recipe (auto_threshold 1, auto_mask
    3) the config's CLEAN holds 354 Jy (residual mean 0.073 rms) and ADMM 382 Jy (0.061 rms).
    """
    from radimg.deconv.admm import model_bound
    from radimg.deconv.major import cotton_schwab
    from radimg.pipeline.preflight import check_mask

    comm, dcfg = job.comm, dict(job.cfg["deconvolution"])
    user_mask = collective_check(comm, check_mask, job.cfg)
    if not (dcfg["auto_threshold"] or dcfg["threshold_jy"]):
        dcfg["auto_threshold"] = 3.0
    dcfg.update(niter=BOUND_CLEAN_NITER, checkpoint_every=0, stop_after_major=0)
    with job.timer.stage("ADMM bound"):
        # One major cycle first: where its model already removes half of ||y_w|| the noise's
        # bound stands (a deeper CLEAN removes more) and the rest of the CLEAN is not needed
        # (point-source fields). Otherwise the CLEAN goes on and the test is made again: the
        # paper's 256^2 galaxy needs all 6 major cycles (73 s of an 1100 s run) to remove half.
        model, residual, state = cotton_schwab(
            backend.residual, np.array(dirty, dtype=np.float64), psf,
            dict(dcfg, nmajor=1), comm=comm, user_mask=user_mask)
        eps, info = model_bound(backend.forward_whitened, y_w, model, eps_noise, comm=comm,
                                xp=backend.xp)
        if info["widened"] and dcfg["nmajor"] > 1:
            state["done"] = False  # it stopped at nmajor 1: the same CLEAN continues
            model, _, state = cotton_schwab(backend.residual, residual, psf, dcfg, comm=comm,
                                            user_mask=user_mask, state=state)
            eps, info = model_bound(backend.forward_whitened, y_w, model, eps_noise,
                                    comm=comm, xp=backend.xp)
    frac = info["model_residual_norm"] / info["data_norm"] if info["data_norm"] else 0.0
    mask = f", auto_mask {dcfg['auto_mask']:g}" if dcfg["auto_mask"] else ""
    what = (f"this config's CLEAN (auto_threshold {dcfg['auto_threshold']:g}{mask}: "
            f"{state['iters']} components in {state['nmajor']} major cycles, "
            f"{model.sum():.4g} Jy) leaves ||y_w - Phi_w x|| = "
            f"{info['model_residual_norm']:.5g}, {100 * frac:.1f}% of ||y_w|| = "
            f"{info['data_norm']:.5g}")
    if info["widened"]:
        job.log(f"ADMM: WARNING: the noise's l2 bound {eps_noise:.5g} is out of reach: {what} "
                "(emission the image cannot hold: outside the field or on scales it cannot "
                f"represent); epsilon = {eps:.5g}, ADMM fits the data as well as that CLEAN")
    else:
        job.log(f"ADMM: epsilon = {eps:.5g} from the noise ({what})")
    return eps


def _whitening(job, backend, sigma_jy):
    """ADMM's whitening factors ``sw`` (row, chan) float64, ``1 / sigma_k`` per sample (0
    where the imaging weight is 0), with one log line saying where the noise came from.

    ``sigma_jy`` > 0: every sample has that rms per part. 0: the MS weights' relative values
    with their scale estimated from the data (:func:`radimg.io.noise.noise_sample`, Stokes
    V or channel differences; issue #16: the real MWA snapshot's WEIGHT says 4 mJy, its
    Stokes V 1.6 Jy), except for a Measurement Set radimg simulated, whose weights are the
    simulated noise exactly; where the data allow no estimate (one channel, no cross
    hands) the weights are used as they are, with a warning in the log.
    """
    from functools import partial

    from radimg.deconv.admm import whitening
    from radimg.io.ms import MSError
    from radimg.io.noise import noise_sample

    comm, in_cfg = job.comm, job.cfg["input"]
    data_weight = np.asarray(backend.data_weight, dtype=np.float64)
    weights_only = np.sqrt(np.clip(data_weight, 0.0, None))
    if sigma_jy > 0:
        sw, _ = whitening(comm, data_weight, sigma_jy)
        job.log(f"ADMM noise: {sigma_jy:.4g} Jy per visibility part (deconvolution.admm_sigma_jy)")
    elif _simulated(comm, in_cfg["ms"]):
        sw = weights_only
        job.log(f"ADMM noise: the weights of a simulated MS (median sigma "
                f"{_median_sigma(comm, data_weight):.4g} Jy per part)")
    else:
        sample = partial(noise_sample, in_cfg["ms"], datacolumn=in_cfg["datacolumn"],
                         spw=in_cfg["spw"], field=in_cfg["field"],
                         chan_range=in_cfg["chan_range"], lock_wait_s=in_cfg["lock_wait_s"])
        try:
            sw, info = whitening(comm, data_weight, 0.0, sample)
        except MSError as exc:  # raised on every rank alike
            sw = weights_only
            job.log(f"ADMM noise: WARNING: {exc}; using the MS weights as they are (median "
                    f"sigma {_median_sigma(comm, data_weight):.4g} Jy per part)")
        else:
            job.log(f"ADMM noise: {info['sigma_jy']:.4g} Jy per visibility part (median), "
                    f"from {info['kind']} ({info['n']} values); the weights alone say "
                    f"{info['weights_sigma_jy']:.4g} Jy (their relative values are kept)")
    return np.where(backend.imaging_weight != 0, sw, 0.0)


def _simulated(comm, ms):
    """Whether every MS of ``input.ms`` is one radimg simulated (decided on rank 0)."""
    from radimg.config import ms_paths
    from radimg.io.ms_write import radimg_ms_marker

    sim = None
    if comm.rank == 0:
        sim = all(radimg_ms_marker(p) is not None for p in ms_paths(ms))
    return bool(comm.bcast(sim, root=0))


def _median_sigma(comm, data_weight):
    """For the log: 1/sqrt of the ranks' median positive weights, averaged by their counts."""
    pos = data_weight[data_weight > 0]
    loc = (float(np.median(pos)) * pos.size, pos.size) if pos.size else (0.0, 0)
    tot = comm.allreduce(np.array(loc))
    return 1.0 / np.sqrt(tot[0] / tot[1]) if tot[1] > 0 else float("nan")


def _admm_state(checkpoint, backend, sara, vis_dtype):
    """The ADMM state a checkpoint holds (the dual variable ``z`` back on the backend)."""
    counters, extras = checkpoint["counters"], checkpoint["extras"]
    return {
        "x": checkpoint["image"],
        "z": backend.vis_from_host(extras["z"], vis_dtype),
        "u": {b: np.asarray(extras[f"u/{b}"], dtype=np.float64) for b in sara.mine},
        "weights": None
        if not counters["reweighted"]
        else {b: np.asarray(extras[f"weights/{b}"], dtype=np.float64) for b in sara.mine},
        "it": int(counters["it"]),
        "round": int(counters["round"]),
        "tau": float(counters["tau"]),
        "done": bool(counters["done"]),
    }


def _admm_contents(state, op_norm, backend, sara, eps):
    """write_checkpoint's arguments for an ADMM state (``z`` gathered by MS row)."""
    per_rank = {f"u/{b}": state["u"][b] for b in sara.mine}
    if state["weights"] is not None:
        per_rank.update({f"weights/{b}": state["weights"][b] for b in sara.mine})
    return {
        "image": state["x"],
        "counters": {
            "algorithm": "admm",
            "it": state["it"],
            "round": state["round"],
            "tau": state["tau"],
            "done": state["done"],
            "op_norm": op_norm,
            "eps": eps,
            "reweighted": state["weights"] is not None,
        },
        "per_rank": per_rank,
        "vis_arrays": {"z": backend.vis_to_host(state["z"])},
        "row_id": backend.row_id,
        "nrows_total": backend.nrows_total,
    }
