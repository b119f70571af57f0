"""The exact flow of a Gaussian mixture: the oracle every sampler and conversion is checked against.

For p_0 = sum_k w_k N(mu_k, S_k) and x_t = alpha x_0 + sigma x_1 every quantity is closed form:

    p_t = sum_k w_k N(alpha mu_k, C_k),            C_k = alpha^2 S_k + sigma^2 I
    E[x_0 | x_t, k] = mu_k + alpha S_k C_k^{-1} (x - alpha mu_k)
    E[x_1 | x_t, k] = sigma C_k^{-1} (x - alpha mu_k)
    u_t(x) = d_alpha x0_hat + d_sigma x1_hat,      score = -x1_hat / sigma = -sum_k pi_k C_k^{-1}(x - alpha mu_k)

with posterior weights pi_k(x) proportional to w_k N(x; alpha mu_k, C_k).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from toyflow.interpolants import Interpolant, Linear, check_time, get

__all__ = ["GaussianMixtureFlow"]


class GaussianMixtureFlow(nn.Module):
    """Exact velocity / x0 / score / log-density of a Gaussian mixture under any interpolant.

    Args:
        means: (K, D) component means.
        stds: isotropic standard deviations, a number or (K,). Give either ``stds`` or ``covariances``.
        weights: (K,) mixture weights (normalised here); default uniform.
        schedule: the interpolant (default Linear).
        covariances: (K, D, D) full covariance matrices (positive definite).
        shape: event shape of one sample (default (D,)), e.g. (1, 28, 28) with D = 784.

    Calling the module gives the velocity: ``gmm(x, t)``, x: (B, *shape), t: (B,) or scalar.
    """

    def __init__(
        self,
        means: Union[Tensor, Sequence],
        stds: Union[None, float, Tensor, Sequence] = None,
        weights: Union[None, Tensor, Sequence] = None,
        schedule: Union[str, Interpolant, None] = None,
        *,
        covariances: Union[None, Tensor, Sequence] = None,
        shape: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        if (stds is None) == (covariances is None):
            raise ValueError("give exactly one of stds (isotropic) or covariances (K, D, D)")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or bool((weights < 0).any()) or not float(weights.sum()) > 0:
            raise ValueError(f"weights must be (K,) = ({K},) non-negative with a positive sum, got {weights}")
        self.isotropic = covariances is None
        if self.isotropic:
            stds = torch.as_tensor(stds, dtype=torch.float64).expand(K).clone()
            if bool((stds <= 0).any()):
                raise ValueError("stds must be positive")
            covariances = torch.eye(D, dtype=torch.float64) * (stds**2)[:, None, None] if D <= 64 else None
            self.register_buffer("stds", stds)
        else:
            covariances = torch.as_tensor(covariances, dtype=torch.float64)
            if covariances.shape != (K, D, D):
                raise ValueError(f"covariances must have shape (K, D, D) = ({K}, {D}, {D}), got {tuple(covariances.shape)}")
            torch.linalg.cholesky(covariances)  # raises if not positive definite
            self.register_buffer("stds", None)
        self.register_buffer("means", means)
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("covariances", covariances)
        self.schedule = get(schedule) if schedule is not None else Linear()
        self.shape = tuple(shape) if shape is not None else (D,)
        if math.prod(self.shape) != D:
            raise ValueError(f"shape {self.shape} does not hold D = {D} values")
        self.dim = D

    # -- helpers ---------------------------------------------------------------------------------
    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def _time(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return check_time(t)

    def _posterior(self, x: Tensor, t: Union[Tensor, float]):
        """Per-component pieces at (x, t): log w_k N(x; a mu_k, C_k) (B, K), C_k^{-1}(x - a mu_k) (B, K, D), coeffs."""
        xf = self._flat(x)
        dt = xf.dtype
        t = self._time(x, t)
        c = self.schedule(t)
        a, s = c.alpha[:, None], c.sigma[:, None]  # (B, 1)
        mu = self.means.to(dt)  # (K, D)
        diff = xf[:, None, :] - a[:, :, None] * mu[None]  # (B, K, D)
        if self.isotropic:
            var = a**2 * self.stds.to(dt)[None] ** 2 + s**2  # (B, K)
            prec_diff = diff / var[:, :, None]
            maha = (diff * prec_diff).sum(-1)
            logdet = self.dim * torch.log(var)
        else:
            cov = a[:, :, None, None] ** 2 * self.covariances.to(dt)[None] + (s**2)[:, :, None, None] * torch.eye(
                self.dim, dtype=dt, device=x.device
            )  # (B, K, D, D)
            chol = torch.linalg.cholesky(cov)
            prec_diff = torch.cholesky_solve(diff[..., None], chol)[..., 0]
            maha = (diff * prec_diff).sum(-1)
            logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_comp = torch.log(self.weights.to(dt))[None] - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return log_comp, prec_diff, c

    # -- the oracle ------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, t: Union[Tensor, float] = 0.0) -> Tensor:
        """log p_t(x): (B,)."""
        log_comp, _, _ = self._posterior(x, t)
        return torch.logsumexp(log_comp, dim=1)

    def posterior_weights(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        """pi_k(x) = P(component k | x_t = x): (B, K)."""
        log_comp, _, _ = self._posterior(x, t)
        return torch.softmax(log_comp, dim=1)

    def x0_and_x1(self, x: Tensor, t: Union[Tensor, float]) -> tuple[Tensor, Tensor]:
        """(E[x_0 | x_t = x], E[x_1 | x_t = x]), each shaped like x."""
        log_comp, prec_diff, c = self._posterior(x, t)
        pi = torch.softmax(log_comp, dim=1)  # (B, K)
        a, s = c.alpha[:, None], c.sigma[:, None]
        x1 = s * (pi[:, :, None] * prec_diff).sum(1)  # (B, D)
        if self.isotropic:
            cov_prec_diff = self.stds.to(x.dtype)[None, :, None] ** 2 * prec_diff
        else:
            cov_prec_diff = torch.einsum("kde,bke->bkd", self.covariances.to(x.dtype), prec_diff)
        x0 = (pi[:, :, None] * (self.means.to(x.dtype)[None] + a[:, :, None] * cov_prec_diff)).sum(1)
        return x0.reshape(x.shape), x1.reshape(x.shape)

    def x0(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        """x0_hat = E[x_0 | x_t = x]."""
        return self.x0_and_x1(x, t)[0]

    def velocity(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        """u_t(x) = d_alpha x0_hat + d_sigma x1_hat."""
        x0, x1 = self.x0_and_x1(x, t)
        c = self.schedule(self._time(x, t))
        shape = (-1,) + (1,) * (x.dim() - 1)
        return c.d_alpha.reshape(shape) * x0 + c.d_sigma.reshape(shape) * x1

    def score(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        """grad_x log p_t(x) = -sum_k pi_k C_k^{-1} (x - alpha mu_k)."""
        log_comp, prec_diff, _ = self._posterior(x, t)
        pi = torch.softmax(log_comp, dim=1)
        return -(pi[:, :, None] * prec_diff).sum(1).reshape(x.shape)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.velocity(x, t)

    def with_schedule(self, schedule: Union[str, Interpolant]) -> "GaussianMixtureFlow":
        """The same mixture under another interpolant (a new object; this one is unchanged)."""
        if self.isotropic:
            out = GaussianMixtureFlow(self.means, self.stds, self.weights, schedule, shape=self.shape)
        else:
            out = GaussianMixtureFlow(self.means, None, self.weights, schedule, covariances=self.covariances, shape=self.shape)
        return out.to(self.means.device)

    # -- sampling --------------------------------------------------------------------------------
    def sample(self, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float32) -> Tensor:
        """n draws from the data distribution p_0: (n, *shape)."""
        dev = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=dev)
        if self.isotropic:
            x = self.means[k] + self.stds[k, None] * z
        else:
            chol = torch.linalg.cholesky(self.covariances)
            x = self.means[k] + torch.einsum("nde,ne->nd", chol[k], z)
        return x.to(dtype).reshape((n,) + self.shape)

    def sample_marginal(
        self, n: int, t: float, generator: Optional[torch.Generator] = None, dtype=torch.float32
    ) -> Tensor:
        """n exact draws of x_t = alpha_t x_0 + sigma_t x_1: (n, *shape)."""
        c = self.schedule(torch.tensor(float(t), dtype=torch.float64))
        x0 = self.sample(n, generator, dtype=torch.float64)
        x1 = torch.randn(x0.shape, generator=generator, dtype=torch.float64, device=x0.device)
        return (c.alpha * x0 + c.sigma * x1).to(dtype)
