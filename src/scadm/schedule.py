"""The authors' noise schedule, the forward process (paper Eq. 1 and Eq. 3) and what the UNet predicts.

LDM's "linear" schedule: the square roots of beta are spaced linearly, then squared. Everything is
computed in float64 and stored as float32, as the authors' registered buffers are, so
`alphas_cumprod` equals theirs bit for bit (diffusers' own cumulative product runs in float32 and
lands up to ~15 ulp away; `scadm.sampling.make_scheduler` overrides it).
"""

from dataclasses import asdict, dataclass
from functools import cached_property

import torch

from scadm.errors import InputError

NUM_TRAIN_TIMESTEPS = 1000
LINEAR_START = 0.0015  # beta_1 (face config)
LINEAR_END = 0.0195  # beta_T
#: What the UNet outputs. "epsilon": the noise (paper Eq. 2, the authors' checkpoints). "v_prediction":
#: v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022), a scadm option for its own models:
#: its loss weighs the x_0 error by SNR + 1 instead of SNR, so at high noise (SNR ~ 0.004 at t = 800;
#: DDIM-25 starts at t = 961, SNR 0.0003) the style colours are learned, not left to the last steps.
PREDICTION_TYPES = ("epsilon", "v_prediction")


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
    prediction_type: str = "epsilon"

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise InputError(
                f"prediction_type: expected one of {', '.join(PREDICTION_TYPES)}, got {self.prediction_type!r}"
            )

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
        sqrt_a, sqrt_1ma = self._coefficients(t, x0)
        return sqrt_a * x0 + sqrt_1ma * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to output for x_t = q_sample(x0, t, noise): noise or v."""
        if self.prediction_type == "epsilon":
            return noise
        sqrt_a, sqrt_1ma = self._coefficients(t, x0)
        return sqrt_a * noise - sqrt_1ma * x0

    def eps_from_output(self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The UNet's output as the noise estimate the samplers step with: eps = sqrt(abar) v +
        sqrt(1 - abar) x_t for v-prediction (linear in the output, so guidance may mix either)."""
        if self.prediction_type == "epsilon":
            return output
        sqrt_a, sqrt_1ma = self._coefficients(t, x_t)
        return sqrt_a * output + sqrt_1ma * x_t

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) for each row of `like` (B, ...), in its dtype and device.

        The authors' float32 buffers, except for float64 `like`: then float64 square roots of
        `alphas_cumprod`, the values float64 DDIM steps with (`scadm.sampling.ddim_coefficients`).
        """
        shape = (-1,) + (1,) * (like.ndim - 1)  # (B, 1, 1, 1) for images
        if like.dtype == torch.float64:
            abar = self.alphas_cumprod.double()
            sqrt_a, sqrt_1ma = abar.sqrt(), (1 - abar).sqrt()
        else:
            sqrt_a, sqrt_1ma = self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod
        t = t.to(like.device)
        return (
            sqrt_a.to(like.device)[t].view(shape).to(like.dtype),
            sqrt_1ma.to(like.device)[t].view(shape).to(like.dtype),
        )
