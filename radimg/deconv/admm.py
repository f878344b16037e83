"""Sparsity-regularised imaging by ADMM, as in PURIFY (Carrillo, McEwen & Wiaux 2014;
Onose et al. 2016; Pratley et al. 2018).

Problem (whitened data ``y_w = sqrt(w) y``, operator ``Phi_w = diag(sqrt(w)) Phi``)::

    min_x ||Psi^T x||_1   s.t.   ||y_w - Phi_w x||_2 <= epsilon,   x >= 0

with ``Psi`` the SARA dictionary (Dirac + Daubechies 1-8, each orthonormal, all divided by
sqrt(9), so ``Psi Psi^T = I``) and ``epsilon = sqrt(2M + 2 sqrt(4M))`` for M complex whitened
samples of unit variance per real part (Onose et al. 2016, sec. 3).

Iteration (scaled ADMM on the split ``v = Phi_w x - y_w``, linearised x-step)::

    v     = P_B(eps)(Phi_w x - y_w + z)                       # l2-ball projection
    x'    = x - mu Phi_w^H (Phi_w x - y_w - v + z),  mu = 1/||Phi_w||^2
    x     = prox_{tau (||Psi^T .||_1 + i_+)}(x')             # dual forward-backward
    z     = z + Phi_w x - y_w - v

``tau = kappa max|Psi^T Phi_w^H y_w| mu`` (PURIFY's gamma). The prox of the analysis l1 norm
with positivity has no closed form; it is solved by dual forward-backward sub-iterations
(Combettes & Pesquet), warm-started from the previous dual ``u``.

Distribution: vis-space arrays (``y_w``, ``sqrt_w``, ``z``) are this rank's rows; images are
replicated; the 9 SARA bases are dealt round-robin to ranks (each rank holds the dual and
reweighting arrays of its own bases) and ``Psi u`` is summed over ranks. The image ``x`` is
broadcast from rank 0 after each update so it is bit-identical on every rank. The operator
comes in as callables, so this module never imports MPI; ``comm`` (mpi4py or None) is used
through ``radimg.parallel.mpi``.

Array module: the vis-space vectors (``y_w``, ``z``, the residual, the l2-ball projection and
the norms) use ``xp`` (numpy, or cupy when the operator keeps samples on a GPU: issue #7,
radimg/gpu/operator.py ``wdot`` / ``whdot``), with operations both modules have; ``fwd``
returns and ``adj`` takes ``xp`` arrays. Images and the SARA prox (PyWavelets) are numpy, so per
iteration one image crosses to the device and one comes back, plus the norms' scalars.
"""

from __future__ import annotations

import math

import numpy as np

from radimg.deconv.major import stop_requested
from radimg.parallel.mpi import allreduce_array, bcast_array, comm_rank_size

__all__ = ["SARA", "admm", "epsilon_bound", "model_bound", "noise_scale", "power_norm",
           "whitening"]

SARA_BASES = ("dirac", "db1", "db2", "db3", "db4", "db5", "db6", "db7", "db8")


def epsilon_bound(m_complex, sigma=1.0):
    """l2 bound ``sqrt(2M + 2 sqrt(4M)) sigma`` for M complex samples of per-part rms sigma
    (mean + 2 standard deviations of the chi distribution with 2M degrees of freedom)."""
    return math.sqrt(2.0 * m_complex + 2.0 * math.sqrt(4.0 * m_complex)) * sigma


#: A model of the image that removes less than this fraction of ||y_w|| marks data dominated
#: by what the image cannot hold (see :func:`model_bound`).
MODEL_BOUND_FRACTION = 0.5


def model_bound(fwd, y_w, model, eps_noise, comm=None, xp=np):
    """The l2 bound ADMM can meet: the noise's, or what a plain model of the image leaves.

    On a real wide-field observation the image cannot hold all the sky the data see (the
    real MWA snapshot, 512 x 1' = 8.5 deg inside a ~25 deg beam plus diffuse emission: a
    CLEAN model to 3 sigma leaves 95.4% of ||y_w||, and so does one over 34 deg, 91.8%;
    the noise's ball is 1.2% of it), so the ball ``||y_w - Phi_w x|| <= eps_noise`` is
    out of reach and ADMM, pushed towards it, loads the field with positive flux that
    stands for emission elsewhere (1179 Jy where CLEAN finds 217; residual mean -0.36
    Jy/beam). Then the bound is what ``model`` (a CLEAN-like model of the field) leaves:
    ADMM looks for the sparsest image that fits the data as well as it does. With x >= 0
    the Dirac part of SARA's l1 norm is the total flux / 3, so that image is also the
    least-flux one in the ball: ADMM's flux and residual mean follow ``model``'s depth (the
    pipeline passes the config's own CLEAN: radimg.pipeline.deconvolve._admm_bound; a
    3-sigma CLEAN of the MWA snapshot leaves a residual mean of 0.13 rms, and so does ADMM
    on its bound, where one to 1 sigma inside a 3-sigma auto-mask leaves 0.07 and ADMM 0.06).
    On such data the l1 weight ``kappa`` of :func:`admm` matters for convergence: 1e-3
    circles the ball for hundreds of iterations there, 1e-2 converges (issue #16, README).

    Parameters
    ----------
    fwd : callable image -> this rank's ``Phi_w x`` (row, chan) complex (``xp``).
    y_w : this rank's whitened data (row, chan) complex (``xp``).
    model : ndarray (npix_y, npix_x) float64, identical on every rank.
    eps_noise : float, :func:`epsilon_bound` of the whitened noise.
    comm : mpi4py communicator or None.

    Returns
    -------
    eps : float
        ``eps_noise``, or the model's residual norm when that exceeds ``eps_noise`` and the
        model removes less than :data:`MODEL_BOUND_FRACTION` of ``||y_w||``.
    info : dict
        ``data_norm`` (||y_w||), ``model_residual_norm``, ``widened`` (bool).
    """
    r = y_w - fwd(model)
    nr = math.sqrt(_vis_norm2(comm, r, xp))
    ny = math.sqrt(_vis_norm2(comm, y_w, xp))
    widened = nr > eps_noise and (ny - nr) < MODEL_BOUND_FRACTION * ny
    return (nr if widened else eps_noise), {"data_norm": ny, "model_residual_norm": nr,
                                             "widened": bool(widened)}


MAD_TO_SIGMA = 1.482602218505602  # sigma of a Gaussian / its median absolute deviation


def noise_scale(values, weight):
    """Robust scale ``s`` of the per-sample noise ``sigma_k = s / sqrt(weight_k)``.

    Parameters
    ----------
    values : ndarray (n,), complex
        Noise-like samples (``radimg.io.noise.noise_sample``: Stokes V or differences).
    weight : ndarray (n,), float, > 0
        Their Stokes I weights (only their relative values matter).

    Returns
    -------
    float
        The median absolute deviation (about the median) of the real and imaginary parts of
        ``values sqrt(weight)`` times 1.4826: the Gaussian sigma, unmoved by a minority of
        samples that carry signal (polarised or leaked sources, RFI).
    """
    z = np.asarray(values) * np.sqrt(np.asarray(weight, dtype=np.float64))
    parts = np.concatenate([z.real, z.imag])
    if parts.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(parts - np.median(parts))))


def whitening(comm, weight, sigma_jy=0.0, sample=None):
    """``sqrt(w_k) / s``: the per-sample factor that gives the data unit noise per part.

    Parameters
    ----------
    comm : mpi4py communicator or None.
    weight : ndarray (row, chan), float, this rank's MS weights (``1/sigma^2`` when honest).
    sigma_jy : float
        > 0: every sample has this rms per part (the weights only flag); 0: the weights'
        scale is estimated from the data (``sample``).
    sample : callable() -> (kind, values, weight), called on rank 0 only when
        ``sigma_jy`` is 0 (``radimg.io.noise.noise_sample`` bound to the MS).

    Returns
    -------
    sw : ndarray (row, chan), float64.
    info : dict with ``sigma_jy`` (median per-sample rms per part), ``scale`` (s), ``kind``,
        ``n`` (samples used) and ``weights_sigma_jy`` (what the weights alone say).
    """
    weight = np.asarray(weight, dtype=np.float64)
    pos = weight > 0
    if sigma_jy > 0:
        sw = np.where(pos, 1.0 / sigma_jy, 0.0)
        return sw, {"sigma_jy": float(sigma_jy), "kind": "deconvolution.admm_sigma_jy",
                    "scale": None, "n": 0, "weights_sigma_jy": None}
    from radimg.io.ms import MSError

    info = None
    if comm is None or comm.Get_rank() == 0:
        try:
            kind, vals, w = sample()
            s = noise_scale(vals, w)
            wmed = float(np.median(w))
            info = {"kind": kind, "scale": s, "n": int(vals.size),
                    "sigma_jy": s / math.sqrt(wmed), "weights_sigma_jy": 1.0 / math.sqrt(wmed)}
            if not s > 0:
                info = {"error": f"the noise estimated from {kind} is 0; set "
                                 "deconvolution.admm_sigma_jy"}
        except MSError as exc:  # every rank raises it, not rank 0 alone
            info = {"error": str(exc)}
    if comm is not None:
        info = comm.bcast(info, root=0)
    if "error" in info:
        raise MSError(info["error"])
    sw = np.sqrt(np.clip(weight, 0.0, None)) / info["scale"]
    return sw, info


def _sum_identical(comm, a):
    """Sum over ranks with a result that is bit-identical everywhere (reduce + broadcast)."""
    a = np.ascontiguousarray(a)
    if comm is None or comm_rank_size(comm)[1] == 1:
        return a
    allreduce_array(comm, a, "sum")
    return bcast_array(comm, a if comm.Get_rank() == 0 else None)


class SARA:
    """SARA dictionary: Dirac + Daubechies 1-8 (periodised, orthonormal) / sqrt(9).

    Parameters
    ----------
    shape : (npix_y, npix_x)
    levels : int, decomposition levels (lowered until both sizes divide by 2**levels).
    comm : mpi4py communicator or None; bases are dealt round-robin to ranks.
    """

    def __init__(self, shape, levels=4, comm=None):
        import pywt

        self.pywt = pywt
        self.shape = tuple(shape)
        lv = int(levels)
        while lv > 0 and (shape[0] % (2**lv) or shape[1] % (2**lv)):
            lv -= 1
        self.levels = lv
        rank, size = comm_rank_size(comm)
        self.comm = comm
        self.mine = [b for i, b in enumerate(SARA_BASES) if i % size == rank]
        self.norm = 1.0 / math.sqrt(len(SARA_BASES))
        self._slices = {}

    def _level(self, b):
        # no deeper than the filter allows: deeper levels are all boundary effects
        w = self.pywt.Wavelet(b)
        return max(1, min(self.levels, self.pywt.dwt_max_level(min(self.shape), w.dec_len)))

    def analysis(self, x):
        """Psi^T x for this rank's bases: {basis: coefficient array (flat float64)}."""
        out = {}
        for b in self.mine:
            if b == "dirac" or self.levels == 0:
                out[b] = x.ravel() * self.norm
                continue
            c = self.pywt.wavedec2(x, b, mode="periodization", level=self._level(b))
            arr, sl = self.pywt.coeffs_to_array(c)
            self._slices[b] = (sl, arr.shape)
            out[b] = arr.ravel() * self.norm
        return out

    def synthesis_local(self, coeffs):
        """Sum of this rank's ``W_b^T u_b`` (not yet summed over ranks)."""
        img = np.zeros(self.shape)
        for b in self.mine:
            u = coeffs[b]
            if b == "dirac" or self.levels == 0:
                img += u.reshape(self.shape) * self.norm
                continue
            if b not in self._slices:
                self.analysis(np.zeros(self.shape))
            sl, shp = self._slices[b]
            c = self.pywt.array_to_coeffs(u.reshape(shp), sl, output_format="wavedec2")
            img += self.pywt.waverec2(c, b, mode="periodization") * self.norm
        return img

    def synthesis(self, coeffs):
        """Psi u summed over all bases (all ranks), identical on every rank."""
        return _sum_identical(self.comm, self.synthesis_local(coeffs))

    def max_abs(self, x):
        """max |Psi^T x| over all bases and ranks."""
        loc = max((float(np.abs(a).max()) for a in self.analysis(x).values()), default=0.0)
        if self.comm is None:
            return loc
        return float(self.comm.allreduce(loc, op=_max_op()))


def _max_op():
    from radimg.parallel.mpi import mpi_op

    return mpi_op("max")


def _vis_norm2(comm, a, xp=np):
    # vdot flattens in numpy and cupy; float() brings one scalar back from a device
    loc = float(xp.vdot(a, a).real)
    if comm is None:
        return loc
    # one number; broadcast from rank 0 so decisions agree bit for bit
    tot = comm.allreduce(loc)
    return float(comm.bcast(tot, root=0))


#: Relative change of the power method's estimate at which it stops. ADMM's step
#: mu = 1/||Phi_w||^2 needs the norm to a few per cent at most (the linearised x-step
#: converges for any mu < 2/||Phi_w||^2, and the estimate approaches the norm from below, so
#: mu errs on the large side by the error left); 1e-6 cost 3-5x the iterations (each a dot and
#: an hdot) for no change in the image beyond 1e-4 (issue #16: 28 s of a 100 s real-data run).
POWER_TOL = 1e-3


def power_norm(fwd, adj, shape, comm=None, niter=100, tol=POWER_TOL, seed=0, info=None):
    """||Phi_w||^2 (largest eigenvalue of Phi_w^H Phi_w) by the power method.

    ``fwd(x)`` returns this rank's (whitened) vis, ``adj(v)`` the image summed over ranks.
    The start vector is seeded and identical on every rank. ``info`` (a dict), when given,
    receives ``iters`` (applications of ``adj(fwd(.))``) and ``rel_change`` (of the last).
    The estimate is raised by the last relative change, so it errs above the norm (mu below
    1/||Phi_w||^2), never below.
    """
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(shape)
    b /= np.linalg.norm(b)
    lam = 0.0
    it, rel = 0, 1.0
    while it < niter:
        it += 1
        ab = adj(fwd(b))
        ab = bcast_array(comm, ab) if comm is not None else ab
        new = float(np.linalg.norm(ab))
        b = ab / new
        rel = abs(new - lam) / new
        lam = new
        if rel <= tol:
            break
    if info is not None:
        info.update(iters=it, rel_change=rel)
    return lam * (1.0 + rel)


def _prox_l1_pos(xt, tau, sara, u, weights, iters, tol=1e-4):
    """prox of tau (||W Psi^T x||_1 + i_{x >= 0}) at ``xt`` by dual forward-backward.

    u : {basis: dual array} (this rank's bases), updated in place and returned.
    weights : {basis: array} reweighting factors or None.
    """
    x = np.maximum(xt - sara.synthesis(u), 0.0)
    for _ in range(iters):
        a = sara.analysis(x)
        for b in sara.mine:
            t = tau if weights is None else tau * weights[b]
            s = u[b] + a[b]
            # u <- (I - soft_t)(u + Psi^T x) = clip(u + Psi^T x, -t, t)
            u[b] = np.clip(s, -t, t)
        xn = np.maximum(xt - sara.synthesis(u), 0.0)
        d = np.linalg.norm(xn - x)
        nx = np.linalg.norm(xn)
        x = xn
        if nx == 0 or d <= tol * nx:
            break
    return x, u


def admm(
    fwd,
    adj,
    y_w,
    shape,
    *,
    eps,
    op_norm,
    comm=None,
    sara=None,
    niter=200,
    tol=1e-4,
    kappa=1e-3,
    dual_iters=5,
    reweights=0,
    state=None,
    checkpoint_every=0,
    on_checkpoint=None,
    stop_after=0,
    stop_check=None,
    log=None,
    xp=None,
):
    """PURIFY ADMM (see the module docstring).

    Parameters
    ----------
    fwd : callable image -> this rank's whitened vis ``Phi_w x`` (row, chan) complex, an
        ``xp`` array.
    adj : callable ``xp`` vis -> image ``Phi_w^H v`` summed over ranks, float64 (numpy).
    y_w : ``xp`` array (row, chan) complex, whitened data of this rank's rows.
    shape : (npix_y, npix_x).
    eps : float, l2 bound on the whitened residual.
    op_norm : float, ``||Phi_w||^2``.
    comm : mpi4py communicator or None.
    sara : SARA instance (built if None).
    niter : int, total iterations (all reweighting rounds).
    tol : float, stop a round when ||x_k+1 - x_k|| / ||x_k+1|| < tol and the residual is
        inside the l2 ball (within 1%).
    kappa : float, l1 weight relative to max|Psi^T Phi_w^H y_w| (PURIFY's default 1e-3).
    dual_iters : int, dual forward-backward iterations of the prox. The duals are warm-started
        from the previous iteration's, so a few suffice: on the real MWA snapshot (512 x 1',
        2 ranks, 100 iterations) 5 and 20 give models within 5.5e-4 of each other (relative
        l2), at 1.0 and 1.7 s per iteration (the prox was 65% of an iteration at 20).
    reweights : int, further reweighted-l1 rounds (Candes et al. 2008) after the first.
    state : dict or None, a checkpointed state to continue from (see the returned state).
    checkpoint_every : int, call ``on_checkpoint(state)`` every k iterations (0 = never).
    stop_after : int, return after this many iterations of this call (0 = no limit), with
        ``state["stopped"] = True``.
    stop_check : callable() -> bool or None. Collective: called on every rank every
        ``checkpoint_every`` iterations (every iteration when that is 0), after the
        checkpoint is written (with ``checkpoint_every`` 0 a checkpoint is written when it
        fires); True returns with ``state["stopped"]`` and ``state["interrupted"]`` True
        (rank 0's answer is broadcast). None: never.
    log : callable(str) or None, progress messages.
    xp : array module of the vis-space vectors (numpy when None; cupy for device-resident
        samples). ``state["z"]`` is an ``xp`` array.

    Returns
    -------
    x : ndarray (npix_y, npix_x) float64, the model (Jy/pixel).
    state : dict with keys x, z, u, weights, it, round, tau, done, stopped, interrupted.
    """
    xp = np if xp is None else xp
    sara = sara or SARA(shape, comm=comm)
    mu = 1.0 / op_norm
    if state is None:
        state = _new_admm_state(adj, y_w, shape, sara, kappa, mu, xp)
    x = state["x"]
    z = state["z"]
    tau = state["tau"]
    phx = fwd(x)
    ran = 0
    state["stopped"] = False
    state["interrupted"] = False
    while not state["done"] and state["it"] < niter:
        res = phx - y_w
        s = res + z
        ns = math.sqrt(_vis_norm2(comm, s, xp))
        v = s * min(1.0, eps / ns) if ns > 0 else s
        g = adj(res - v + z)
        xt = x - mu * g
        xn, state["u"] = _prox_l1_pos(xt, tau, sara, state["u"], state["weights"], dual_iters)
        xn = bcast_array(comm, xn) if comm is not None else xn
        phx = fwd(xn)
        z = z + phx - y_w - v
        dx = float(np.linalg.norm(xn - x))
        nx = float(np.linalg.norm(xn))
        x = xn
        state["it"] += 1
        ran += 1
        rnorm = math.sqrt(_vis_norm2(comm, phx - y_w, xp))
        rel = dx / nx if nx > 0 else 0.0
        if log is not None and (state["it"] % 10 == 0 or state["it"] == 1):
            log(f"ADMM it {state['it']}: rel change {rel:.2e}, ||r|| {rnorm:.4g} (eps {eps:.4g})")
        if rel < tol and rnorm <= 1.01 * eps:
            _end_round(state, sara, x, reweights)
        state["x"], state["z"] = x, z
        at_interval = not checkpoint_every or state["it"] % checkpoint_every == 0
        if checkpoint_every and on_checkpoint is not None and at_interval:
            on_checkpoint(state)
        if at_interval and not state["done"] and stop_requested(comm, stop_check):
            state["stopped"] = True
            state["interrupted"] = True
            if on_checkpoint is not None and not checkpoint_every:
                on_checkpoint(state)  # so --resume can continue from here
            break
        if stop_after and ran >= stop_after and not state["done"]:
            state["stopped"] = True
            if on_checkpoint is not None and not (
                checkpoint_every and state["it"] % checkpoint_every == 0
            ):
                on_checkpoint(state)
            break
    state["x"], state["z"] = x, z
    return x, state


def _new_admm_state(adj, y_w, shape, sara, kappa, mu, xp):
    """The state of a new run: zero model, duals and SARA duals; ``tau = kappa * mu *
    max|Psi^T Phi_w^H y_w|``, computed from the dirty image."""
    dirty = adj(y_w)
    tau = kappa * sara.max_abs(dirty) * mu
    state = {
        "x": np.zeros(shape),
        "z": xp.zeros_like(y_w),
        "u": {b: np.zeros(sara.shape[0] * sara.shape[1]) for b in sara.mine},
        "weights": None,
        "it": 0,
        "round": 0,
        "tau": float(tau),
        "done": False,
    }
    # analysis coefficient layout may be larger than the image (periodisation pads none,
    # but keep the shapes honest)
    a0 = sara.analysis(np.zeros(shape))
    state["u"] = {b: np.zeros_like(a0[b]) for b in sara.mine}
    return state


def _end_round(state, sara, x, reweights):
    """A round has converged: start the next reweighted-l1 round (Candes et al. 2008:
    weights ``delta / (delta + |Psi^T x|)``, delta falling tenfold per round) or, after
    ``reweights`` of them, mark the run done."""
    if state["round"] < reweights:
        state["round"] += 1
        a = sara.analysis(x)
        amax = sara.max_abs(x)
        delta = max(amax * 10.0 ** (-state["round"] - 1), 1e-30)
        state["weights"] = {b: delta / (delta + np.abs(a[b])) for b in sara.mine}
    else:
        state["done"] = True
