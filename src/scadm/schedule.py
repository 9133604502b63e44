"""The authors' noise schedule and the forward process (paper Eq. 1 and Eq. 3).

LDM's "linear" schedule: the square roots of beta are spaced linearly, then squared. Everything is
computed in float64 and stored as float32, as the authors' registered buffers are, so
`alphas_cumprod` equals theirs bit for bit (diffusers' own cumulative product runs in float32 and
lands up to ~15 ulp away; `scadm.sampling.make_scheduler` overrides it).
"""

from dataclasses import asdict, dataclass
from functools import cached_property

import torch

NUM_TRAIN_TIMESTEPS = 1000
LINEAR_START = 0.0015  # beta_1 (face config)
LINEAR_END = 0.0195  # beta_T


@dataclass(frozen=True)
class NoiseSchedule:
    """beta_1..beta_T of the forward process q(x_t | x_{t-1}) (paper Eq. 1), 0-indexed as t = 0..T-1.

    >>> schedule = NoiseSchedule()
    >>> round(schedule.alphas_cumprod[0].item(), 4)
    0.9985
    """

    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    linear_start: float = LINEAR_START
    linear_end: float = LINEAR_END

    @cached_property
    def _betas64(self) -> torch.Tensor:
        sqrt_betas = torch.linspace(
            self.linear_start**0.5, self.linear_end**0.5, self.num_train_timesteps, dtype=torch.float64
        )
        return sqrt_betas**2

    @cached_property
    def _alphas_cumprod64(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self._betas64, dim=0)  # alpha_bar_t = prod_{i<=t} (1 - beta_i)

    @cached_property
    def betas(self) -> torch.Tensor:
        return self._betas64.float()  # (T,)

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t (paper Eq. 3), float32 rounded from float64: the authors' buffer exactly."""
        return self._alphas_cumprod64.float()  # (T,)

    @cached_property
    def sqrt_alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod64.sqrt().float()

    @cached_property
    def sqrt_one_minus_alphas_cumprod(self) -> torch.Tensor:
        return (1.0 - self._alphas_cumprod64).sqrt().float()

    def to_dict(self) -> dict:
        """The constructor arguments, for a JSON config (`NoiseSchedule(**d)` inverts it)."""
        return asdict(self)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (paper Eq. 3), for training.

        Uses the float32 square-root buffers (rounded from float64), as the authors' `q_sample` does;
        `t` is an int64 tensor (B,) of 0-indexed timesteps, `x0` and `noise` are (B, ...).
        """
        shape = (-1,) + (1,) * (x0.ndim - 1)  # (B, 1, 1, 1) for images
        sqrt_a = self.sqrt_alphas_cumprod.to(x0.device)[t].view(shape).to(x0.dtype)
        sqrt_1ma = self.sqrt_one_minus_alphas_cumprod.to(x0.device)[t].view(shape).to(x0.dtype)
        return sqrt_a * x0 + sqrt_1ma * noise
