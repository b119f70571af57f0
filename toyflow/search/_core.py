"""The engine under every search method: :class:`SearchContext` (the sampler's time grid, velocity
evaluations charged to the ledger, x0_hat, the (affine) transition, reward checks).

Every transition on the grid is affine in (x, u, z):

    dynamics.step(x, u, t_k, t_{k+1}, schedule, g(t_k), z) = a_k x + b_k u + c_k z
    dynamics.x0_from_velocity(x, u, t_k, schedule)         = p_k x + q_k u

so the coefficients are computed once per run by calling those very functions on basis inputs
(float64); a tick then costs a handful of tensor operations however many runs sit at different
grid times. ``c_k = 0`` for the ODE and for the last step (t_{k+1} = 0, the x0_hat step).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from toyflow import dynamics, interpolants
from toyflow.rewards import Reward, check_reward_output
from toyflow.search.budget import Ledger
from toyflow.search.options import SamplerOptions
from toyflow.search.result import NullRecorder
from toyflow.search.sampler import MODES, Sampler, resolve_sampler

__all__ = ["MODES", "SearchContext", "Context"]

IntOrTensor = Union[int, Tensor]


class CoefColumn:
    """Columns of ``SearchContext.coef`` (one row per grid step k): the transition t_k -> t_{k+1} is
    a_k x + b_k u + c_k z, x0_hat at t_k is p_k x + q_k u, and h_k = t_k - t_{k+1}."""

    A, B, C, P, Q, H = range(6)


class VelocityColumn:
    """Columns of ``GridVelocity.table`` (one row per grid time): the model's time, then for a converted
    path 1/s, ds/s and s dt of u_path(x, t) = (ds/s) x + s dt u_model(x / s, t_model)."""

    T_MODEL, INV_S, LIN, SCALE = range(4)


class TickColumn:
    """Columns of ``SearchContext.tick_table()`` (row k: a move from t_k): the transition's a, b, c
    and h, then p and q of x0_hat at t_{k+1}, then the velocity row of t_{k+1} from ``VELOCITY``
    on (:class:`VelocityColumn`, shifted)."""

    A, B, C, H, P_NEXT, Q_NEXT, VELOCITY = range(7)


class ParticleSlot:
    """Slots of a packed particle (R, P, *shape): the state x, its velocity u, x0_hat (and grad r)."""

    X, U, X0, GRAD = range(4)


def all_finite(t: Tensor) -> bool:
    """True if every entry of ``t`` is finite (a sum first: one cheap reduction in the common case)."""
    if t.requires_grad:
        t = t.detach()
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def _reward_name(reward) -> str:
    return str(getattr(reward, "name", getattr(reward, "__name__", type(reward).__name__)))


class GridVelocity:
    """The sampler's velocity model evaluated at grid times: ``v(x, k) = u_{t_k}(x)``.

    Where ``sampler.model_path != sampler.path`` (vp-sde: Linear -> VP) it uses the scale-time
    conversion (:class:`toyflow.interpolants.ConvertedVelocity`), with its per-time scalars
    precomputed on the grid: u_path(x, t_k) = (ds/s) x + s dt u_model(x / s, t_src).
    """

    def __init__(self, model: Callable, sampler: Sampler, times64: Tensor, dtype, device):
        self.model = model
        grid = times64[:-1]  # velocities are never needed at t_K = 0
        if sampler.converts:
            conv = interpolants.ConvertedVelocity(model, sampler.model_path, sampler.path)
            t_src, s, dt, ds = conv.source_time_and_scale(grid)
            table = torch.stack([t_src, 1.0 / s, ds / s, s * dt], 1)
            if not bool(torch.isfinite(table).all()):
                raise ValueError(f"the {sampler.model_path!r} -> {sampler.path!r} conversion is not finite on this "
                                 "time grid (t = 0 in the grid?)")
            self.converted = True
        else:
            table = grid[:, None]
            self.converted = False
        self.table = table.to(dtype=dtype, device=device)
        self.rows = [[float(v) for v in row] for row in table]
        self.t_model = self.table[:, VelocityColumn.T_MODEL].contiguous()

    def _model(self, x: Tensor, t: Tensor) -> Tensor:
        u = self.model(x, t)
        if not torch.is_tensor(u) or u.shape != x.shape:
            dynamics.check_velocity(u, x, where="the model")  # raises the detailed error
        return u

    def apply(self, x: Tensor, cols: tuple) -> Tensor:
        """Velocity with the grid row(s) already gathered: ``cols`` = (t,) or (t, 1/s, ds/s, s dt),
        each broadcastable against x except t: (B,)."""
        if not self.converted:
            return self._model(x, cols[0])
        t, inv_s, lin, scale = cols
        return torch.addcmul(lin * x, scale, self._model(x * inv_s, t))

    def __call__(self, x: Tensor, k: IntOrTensor) -> Tensor:
        B = x.shape[0]
        if isinstance(k, int):
            t = self.t_model[k].expand(B)
            if not self.converted:
                return self._model(x, t)
            _, inv_s, lin, scale = self.rows[k]  # VelocityColumn order
            return lin * x + scale * self._model(x * inv_s, t)
        if not self.converted:
            return self._model(x, self.t_model[k])
        tab = self.table[k]
        view = (B,) + (1,) * (x.dim() - 1)
        V = VelocityColumn
        return tab[:, V.LIN].view(view) * x + tab[:, V.SCALE].view(view) * self._model(x * tab[:, V.INV_S].view(view), tab[:, V.T_MODEL])


class SearchContext:
    """One search call as a method sees it: the sampler's grid, the NFE ledger, random numbers, rewards.

    A :class:`~toyflow.search.Method` writes its algorithm with these primitives (grid index k:
    t_k = ``times[k]``, k = 0 .. K, t_0 = 1 noise, t_K = 0 data; a batch of B rows is run-major,
    B = runs * n, row b belongs to run b // n):

    - ``runs`` (R), ``steps`` (K), ``budget`` (NFE per run), ``shape`` (one sample), ``times``
      (K + 1,), ``sampler`` (the :class:`~toyflow.search.Sampler`), ``device``, ``dtype``, ``generator``.
    - ``noise(*lead)``: standard normal (*lead, *shape); ``uniform(*size)``: U[0, 1). Every random
      number comes from the call's generator (same seed, same result).
    - ``velocity(x, k, run=None)``: u_{t_k}(x), the only call of the model; charges 1 NFE per row
      to its run (``BudgetExceeded`` past the budget). ``k`` an int, or (B,) per row.
    - ``x0(x, u, k)``: x0_hat = p_k x + q_k u (Tweedie from the velocity at t_k).
    - ``reward(x0)``: r(x0) (B,), checked (shape, finite); free (rewards are not NFE).
    - ``step(x, u, k, z=None)``: the transition t_k -> t_{k+1}, a_k x + b_k u + c_k z; pass
      ``z = noise(B)`` where ``needs_noise(k)`` (c_k != 0: SDE steps before the last). The last step
      (k = K - 1, to t_K = 0) is the deterministic x0_hat step and needs no velocity of its own.
    - ``guided(x, k)``: (u, x0_hat, reward, grad_x reward) through the model, for methods with
      ``needs_gradients``; ``h(k, x)``: step length t_k - t_{k+1}; ``renoise(x, k_from, k_to, z)``:
      the interpolant's forward kernel up to the noisier t_{k_to}.
    - ``ledger``: ``spent`` (R,), ``left`` (R,), ``per_step`` (R, K); ``recorder``: the
      :class:`~toyflow.search.result.Recorder` when ``record=True``, else a
      :class:`~toyflow.search.result.NullRecorder` (same calls, no work; ``recorder.active`` tells).

    ``sampler``: a :class:`~toyflow.search.Sampler`, or :class:`SamplerOptions` with a preset ``mode``.
    """

    def __init__(
        self,
        model: Callable,
        reward: Callable,
        *,
        sampler: Union[Sampler, SamplerOptions],
        budget: int,
        steps: int,
        runs: int,
        shape: tuple,
        generator: Optional[torch.Generator],
        device,
        dtype,
        mode: Optional[str] = None,
    ):
        if not isinstance(sampler, Sampler):
            if mode is None:
                raise ValueError("SearchContext got SamplerOptions without a mode; pass mode='vp-sde' (a preset) or a "
                                 "search.Sampler as sampler=")
            sampler = resolve_sampler(mode, sampler)
        self.model, self.reward_fn, self.sampler, self.mode = model, reward, sampler, sampler.name
        self.reward_name = _reward_name(reward)
        # a toyflow Reward checks its own output in __call__; the engine checks once (reward() below), so it
        # calls evaluate() directly where __call__ is the base class's (a subclass overriding it is called as is)
        plain = isinstance(reward, Reward) and type(reward).__call__ is Reward.__call__
        self._evaluate_reward = reward.evaluate if plain else reward
        self._renoise_rows: dict = {}
        self.budget, self.K, self.R, self.shape = budget, steps, runs, tuple(shape)
        self.generator, self.device, self.dtype = generator, device, dtype
        self.sde = sampler.sde
        self.schedule = sampler.path
        times64 = dynamics.time_grid(sampler.time_grid, steps, dtype=torch.float64, schedule=self.schedule)
        self.times = times64.to(dtype=dtype, device=device)
        self.velocity_model = GridVelocity(model, sampler, times64, dtype, device)
        self.ledger = Ledger(runs, steps, budget, device=device)
        self.recorder = NullRecorder()  # search.run installs a Recorder when record=True

        # affine transition and x0_hat coefficients, from dynamics itself on basis inputs
        K = steps
        t, tn = times64[:-1], times64[1:]
        g = None
        if self.sde:
            # g in the time of diffusion_path (None: the sampling path's own), moved to the sampling path
            # at equal noise level (the same eta ratio g^2 / g^2_DDPM); identity when the paths coincide
            g_path = self.schedule if sampler.diffusion_path is None else sampler.diffusion_path
            g_of_t = dynamics.diffusion_schedule(sampler.diffusion, float(sampler.eta), g_path)
            g = dynamics.transport_diffusion(g_of_t, g_path, self.schedule)(t)
        # basis inputs side by side, one call each (the maps are elementwise): column j of x, u, z is e_j
        basis = torch.eye(3, dtype=torch.float64).expand(K, 3, 3)
        ex, eu, ez = basis.unbind(1)  # (K, 3) each: ex = [1, 0, 0], eu = [0, 1, 0], ez = [0, 0, 1]
        a, b, c = dynamics.step(ex, eu, t, tn, self.schedule, g=g, noise=ez).unbind(1)  # c = 0 for the ODE (g None)
        p, q = dynamics.x0_from_velocity(ex[:, :2], eu[:, :2], t, self.schedule).unbind(1)
        h = t - tn
        table = torch.stack([a, b, c, p, q, h], 1)  # columns: CoefColumn
        if not bool(torch.isfinite(table).all()):
            raise ValueError(f"the {sampler.name} transition is not finite on this time grid; check diffusion and eta")
        self.coef = table.to(dtype=dtype, device=device)
        self.coef_rows = [[float(v) for v in row] for row in table]
        self.stochastic = [row[CoefColumn.C] != 0.0 for row in self.coef_rows]  # does step k use noise?

    @property
    def runs(self) -> int:
        """R, the independent runs advanced together."""
        return self.R

    @property
    def steps(self) -> int:
        """K, the grid steps (t_0 = 1 ... t_K = 0)."""
        return self.K

    def tick_table(self) -> Tensor:
        """(K, 6 + V) rows for a transition from grid index k: [a_k, b_k, c_k, h_k, p_{k+1}, q_{k+1}]
        followed by the velocity row of t_{k+1} (V = 1 or 4); the last row (k = K - 1, to t = 0)
        has zeros where t_{k+1} = 0 has no velocity."""
        nxt = torch.zeros(self.K, 2 + self.velocity_model.table.shape[1], dtype=self.dtype, device=self.device)
        C = CoefColumn
        nxt[:-1, 0] = self.coef[1:, C.P]
        nxt[:-1, 1] = self.coef[1:, C.Q]
        nxt[:-1, 2:] = self.velocity_model.table[1:]
        return torch.cat([self.coef[:, [C.A, C.B, C.C, C.H]], nxt], 1).contiguous()  # columns: TickColumn

    # -- random numbers ----------------------------------------------------------------------
    def noise(self, *lead: int) -> Tensor:
        """Standard normal draws of shape (*lead, *shape) from the run's generator."""
        return torch.randn(tuple(lead) + self.shape, generator=self.generator, dtype=self.dtype, device=self.device)

    def uniform(self, *size: int) -> Tensor:
        return torch.rand(size, generator=self.generator, dtype=self.dtype, device=self.device)

    # -- velocity (the only place the model is called) ---------------------------------------
    def velocity(
        self,
        x: Tensor,
        k: IntOrTensor,
        run: Optional[Tensor] = None,
        cols: Optional[tuple] = None,
        unique: bool = False,
        charge: bool = True,
    ) -> Tensor:
        """u_{t_k}(x) for a batch; charges one NFE per row to the ledger (``charge=False``: the
        caller charges what the algorithm used itself, see RBF's chunked proposals).

        ``run`` None: rows are run-major, B = R * n (row b belongs to run b // n), or B = R with
        ``k`` (R,) per run. Otherwise ``run`` (B,) names each row's run. ``cols``: the grid row of
        ``k`` already gathered (see :meth:`GridVelocity.apply`), a shortcut for tight loops.
        """
        B = x.shape[0]
        if not charge:
            pass
        elif run is None:
            if isinstance(k, int):
                if B % self.R:
                    raise RuntimeError(f"internal error: {B} rows are not a whole number of particles per run")
                self.ledger.charge(k, per_run=B // self.R)
            else:
                self.ledger.charge(k)
        else:
            self.ledger.charge(k, run, unique=unique)
        u = self.velocity_model(x, k) if cols is None else self.velocity_model.apply(x, cols)
        if not (torch.is_tensor(u) and u.shape == x.shape and all_finite(u)):
            dynamics.check_velocity(u, x, where="the model")  # raises the detailed error
        return u

    # -- affine maps ---------------------------------------------------------------------------
    def _col(self, j: int, k: IntOrTensor, x: Tensor):
        if isinstance(k, int):
            return self.coef_rows[k][j]
        return self.coef[k, j].view((x.shape[0],) + (1,) * (x.dim() - 1))

    def x0(self, x: Tensor, u: Tensor, k: IntOrTensor) -> Tensor:
        """x0_hat = p_k x + q_k u (Tweedie from the velocity at t_k)."""
        return self._col(CoefColumn.P, k, x) * x + self._col(CoefColumn.Q, k, x) * u

    def step(self, x: Tensor, u: Tensor, k: IntOrTensor, z: Optional[Tensor] = None) -> Tensor:
        """One transition t_k -> t_{k+1}: a_k x + b_k u + c_k z (``z`` None where c_k = 0)."""
        out = self._col(CoefColumn.A, k, x) * x + self._col(CoefColumn.B, k, x) * u
        if z is not None:
            out = out + self._col(CoefColumn.C, k, x) * z
        return out

    def needs_noise(self, k: int) -> bool:
        return self.stochastic[k]

    def h(self, k: IntOrTensor, x: Tensor):
        """Step length t_k - t_{k+1}, broadcastable against x."""
        return self._col(CoefColumn.H, k, x)

    def renoise(self, x: Tensor, k_from: int, k_to: int, z: Tensor) -> Tensor:
        """Forward kernel of the interpolant from t_{k_from} up to the noisier t_{k_to} (k_to <= k_from)."""
        ratio, std = self._renoise_coefficients(k_from - k_to)[k_from]
        return ratio * x + std * z

    def _renoise_coefficients(self, lag: int) -> list:
        """[(ratio, std)] of the renoise kernel from every t_k up to t_{k - lag} (k >= lag), from
        dynamics.renoise on basis inputs once per lag (one validation, not one per call)."""
        if lag not in self._renoise_rows:
            k = torch.arange(lag, self.K + 1)
            times64 = self.times.to(torch.float64).cpu()
            t_from, t_to = times64[k], times64[k - lag]
            one, zero = torch.ones(len(k), 1, dtype=torch.float64), torch.zeros(len(k), 1, dtype=torch.float64)
            ratio = dynamics.renoise(one, t_from, t_to, self.schedule, zero)[:, 0].tolist()
            std = dynamics.renoise(zero, t_from, t_to, self.schedule, one)[:, 0].tolist()
            self._renoise_rows[lag] = [None] * lag + list(zip(ratio, std))
        return self._renoise_rows[lag]

    # -- rewards -------------------------------------------------------------------------------
    def reward(self, x0: Tensor, check_finite: bool = True) -> Tensor:
        """r(x0_hat): (B,), checked (shape, finite); never charged (rewards are not NFE).

        ``check_finite=False``: shape and dtype only; the caller checks the values where it reads them
        (and calls :meth:`check_reward_values` to raise the detailed error)."""
        r = check_reward_output(self._evaluate_reward(x0), x0, self.reward_name, cast_integers=True,
                                check_finite=check_finite)
        return r if r.dtype == self.dtype else r.to(self.dtype)

    def check_reward_values(self, r: Tensor, x0: Tensor) -> None:
        """Raise the detailed error of :meth:`reward` for NaN / inf values ``r`` = r(x0)."""
        check_reward_output(r, x0, self.reward_name)

    def guided(
        self, x: Tensor, k: IntOrTensor, run: Optional[Tensor] = None, cols=None, unique: bool = False, charge: bool = True
    ):
        """Velocity, x0_hat, reward and grad_x r(x0_hat(x)) at (x, t_k), the gradient through the model.

        One NFE per row (the backward pass is not counted as an NFE).
        """
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            u = self.velocity(xg, k, run, cols=cols, unique=unique, charge=charge)
            x0 = self.x0(xg, u, k)
            r = self.reward(x0)
            if not r.requires_grad:
                raise ValueError(
                    f"reward {self.reward_name!r} says it is differentiable, but its output does not depend on x0 through "
                    "autograd (detached, or computed without gradients); gradient guidance needs grad_x r"
                )
            (grad,) = torch.autograd.grad(r.sum(), xg)
        if not bool(torch.isfinite(grad).all()):
            raise ValueError(f"grad_x of reward {self.reward_name!r} through the model is NaN or inf")
        return u.detach(), x0.detach(), r.detach(), grad.detach()

    # -- helpers -----------------------------------------------------------------------------
    def run_rows(self, n: int) -> Tensor:
        """(R * n,) run index of each row in a run-major layout."""
        return torch.arange(self.R, device=self.device).repeat_interleave(n)


#: the name the methods used before the protocol was public
Context = SearchContext
