import math

import numpy as np
import pytest
import torch

from scadm.schedule import NoiseSchedule

T = 1000
SCHEDULE = NoiseSchedule()


def closed_form_alphas_cumprod64() -> np.ndarray:
    """The paper's Eq. 3 over the authors' betas, in NumPy float64."""
    betas = np.linspace(math.sqrt(0.0015), math.sqrt(0.0195), T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def test_alphas_cumprod_equals_float64_closed_form_rounded_to_float32():
    ac64 = closed_form_alphas_cumprod64()
    assert SCHEDULE.alphas_cumprod.dtype == torch.float32
    assert torch.equal(SCHEDULE.alphas_cumprod, torch.from_numpy(ac64.astype(np.float32)))
    assert torch.equal(SCHEDULE.sqrt_alphas_cumprod, torch.from_numpy(np.sqrt(ac64).astype(np.float32)))
    assert torch.equal(SCHEDULE.sqrt_one_minus_alphas_cumprod, torch.from_numpy(np.sqrt(1 - ac64).astype(np.float32)))
    assert SCHEDULE.alphas_cumprod[0].item() == pytest.approx(0.9985, rel=1e-7)  # 1 - beta_1, float32
    assert SCHEDULE.alphas_cumprod[-1].item() == pytest.approx(1.42e-4, rel=0.01)


def test_q_sample_is_eq3():
    ac64 = closed_form_alphas_cumprod64()
    x0 = torch.randn(3, 2, 4, 4)
    noise = torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 500, 999])
    a = torch.from_numpy(ac64[t.numpy()]).view(-1, 1, 1, 1)
    expected = a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()
    # float32 q_sample vs float64: |x_t| ~ 2, ~2 ulp (measured 1e-7)
    torch.testing.assert_close(SCHEDULE.q_sample(x0, t, noise).double(), expected, rtol=0, atol=1e-6)


def test_schedule_config_round_trips_through_a_dict():
    d = SCHEDULE.to_dict()
    assert d == {
        "num_train_timesteps": 1000,
        "linear_start": 0.0015,
        "linear_end": 0.0195,
        "prediction_type": "epsilon",
    }
    assert NoiseSchedule(**d) == SCHEDULE
    # a model_index.json written before prediction_type existed means the authors' eps-prediction
    del d["prediction_type"]
    assert NoiseSchedule(**d) == SCHEDULE


def test_v_target_is_salimans_ho_and_converts_back_to_the_drawn_noise():
    v_schedule = NoiseSchedule(prediction_type="v_prediction")
    ac64 = closed_form_alphas_cumprod64()
    x0, noise = torch.randn(4, 3, 5, 5, dtype=torch.float64).float(), torch.randn(4, 3, 5, 5)
    t = torch.tensor([0, 250, 800, 999])
    a = torch.from_numpy(ac64[t.numpy()]).view(-1, 1, 1, 1)
    v = a.sqrt() * noise.double() - (1 - a).sqrt() * x0.double()
    # float32 vs float64, |v| ~ 3: measured 1.6e-7; the round trip below adds a float32 step on |eps| ~ 3
    torch.testing.assert_close(v_schedule.target(x0, t, noise).double(), v, rtol=0, atol=1e-6)
    x_t = v_schedule.q_sample(x0, t, noise)
    torch.testing.assert_close(v_schedule.eps_from_output(x_t, t, v.float()), noise, rtol=0, atol=1e-5)
    # eps-prediction: the target is the noise and the output is used as it is
    assert SCHEDULE.target(x0, t, noise) is noise and SCHEDULE.eps_from_output(x_t, t, x0) is x0


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type.*sample"):
        NoiseSchedule(prediction_type="sample")


def test_v_prediction_in_float64_converts_back_to_the_noise_to_float64_precision():
    """In float64 the square roots are float64 ones of alphas_cumprod, so sqrt(a)^2 + sqrt(1-a)^2 = 1
    to ~1e-16 and eps comes back to ~1e-15 (|noise| < 5); float32-rounded roots would leave ~1e-8."""
    v_schedule = NoiseSchedule(prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    x0, noise = (
        torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64),
        torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64),
    )
    t = torch.tensor([0, 250, 800, 999])
    x_t = v_schedule.q_sample(x0, t, noise)
    v = v_schedule.target(x0, t, noise)
    assert x_t.dtype == v.dtype == torch.float64
    a = SCHEDULE.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise, rtol=0, atol=1e-14)
    torch.testing.assert_close(v_schedule.eps_from_output(x_t, t, v), noise, rtol=0, atol=1e-14)
