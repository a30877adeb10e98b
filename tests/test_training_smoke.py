"""Training scripts run a few tiny steps into a temp dir; train/sample conventions of the demo denoisers agree."""
import os
import types

import torch
from safetensors import safe_open

from benchmarks.quality import k_denoiser
from samplers.schedules import alphas_cumprod, discrete_sigmas
from training import train_autoencoder, train_denoiser, train_judge
from training.train_denoiser import denoiser_loss

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def _meta(path: str) -> dict[str, str]:
    with safe_open(path, "pt") as f:
        return f.metadata()


def test_training_scripts_smoke(tmp_path):
    before = {f: os.path.getmtime(os.path.join(WEIGHTS, f)) for f in os.listdir(WEIGHTS)}
    judge, ae = str(tmp_path / "judge.safetensors"), str(tmp_path / "ae.safetensors")
    train_judge.main(["--smoke", "--out", judge])
    assert _meta(judge)["tn_kind"] == "judge"
    train_autoencoder.main(["--smoke", "--out", ae, "--judge", judge])
    assert float(_meta(ae)["scale_factor"]) > 0
    for kind in ("dit", "sit"):
        out = str(tmp_path / f"{kind}.safetensors")
        r = train_denoiser.main(["--kind", kind, "--smoke", "--ae", ae, "--out", out])
        meta = _meta(out)
        assert r["steps"] == 3 and meta["family"] == kind and meta["num_classes"] == "10"
        assert meta["prediction"] == ("eps" if kind == "dit" else "sit_velocity")
        with safe_open(out, "pt") as f:
            keys = set(f.keys())
        assert {"x_embedder.proj.weight", "y_embedder.embedding_table.weight", "final_layer.linear.weight"} <= keys
    assert before == {f: os.path.getmtime(os.path.join(WEIGHTS, f)) for f in os.listdir(WEIGHTS)}


def test_training_targets_are_what_an_oracle_predicts():
    """An oracle that knows the clean latent reaches zero loss: checks the forward processes and the t convention."""
    torch.manual_seed(0)
    x1, y = torch.randn(64, 4, 8, 8), torch.zeros(64, dtype=torch.long)
    ac = alphas_cumprod("ddpm_linear").float()

    def eps_oracle(xt, t, y):  # t: float DDPM index
        a = ac[t.long()].view(-1, 1, 1, 1)
        return (xt - a.sqrt() * x1) / (1 - a).sqrt()

    def velocity_oracle(xt, t, y):  # t in [0, 1], t = 1 is data; u = x1 - x0 with x0 = (xt - t x1) / (1 - t)
        tt = t.view(-1, 1, 1, 1).double()
        return ((x1 - xt) / (1 - tt)).float()

    assert denoiser_loss(eps_oracle, x1, y, "dit", ac) < 1e-6
    assert denoiser_loss(velocity_oracle, x1, y, "sit", ac) < 1e-4


def test_min_snr_weighting_and_logit_normal_times():
    """--snr-gamma weights each sample's eps loss by min(SNR_t, gamma) / SNR_t; --t-sampling logit_normal: t = sigmoid(N(0,1))."""
    ac = alphas_cumprod("ddpm_linear").float()
    x1, y = torch.randn(4096, 4, 8, 8), torch.zeros(4096, dtype=torch.long)
    seen = {}

    def eps_off_by_half(xt, t, y):  # the exact eps plus 0.5 everywhere: every sample's squared error is 0.25
        seen["t"] = t.long()
        a = ac[t.long()].view(-1, 1, 1, 1)
        return (xt - a.sqrt() * x1) / (1 - a).sqrt() + 0.5

    torch.manual_seed(3)
    plain = denoiser_loss(eps_off_by_half, x1, y, "dit", ac).item()
    torch.manual_seed(3)
    weighted = denoiser_loss(eps_off_by_half, x1, y, "dit", ac, snr_gamma=5.0).item()
    snr = ac[seen["t"]] / (1 - ac[seen["t"]])
    expected = 0.25 * torch.where(snr > 5, 5 / snr, torch.ones_like(snr)).mean().item()
    assert abs(plain - 0.25) < 1e-4 and abs(weighted - expected) < 1e-4
    assert weighted < 0.95 * plain  # the nearly clean timesteps (SNR > 5: t < 130) count for less

    def velocity_probe(xt, t, y):
        seen["t"] = t
        return torch.zeros_like(xt)

    for logit_normal, lo, hi in ((False, 0.43, 0.50), (True, 0.65, 0.71)):
        torch.manual_seed(4)
        denoiser_loss(velocity_probe, x1, y, "sit", ac, logit_normal=logit_normal)
        t = seen["t"]
        inner = ((t > torch.sigmoid(torch.tensor(-1.0))) & (t < torch.sigmoid(torch.tensor(1.0)))).float().mean()
        assert 0 < t.min() and t.max() < 1 and lo < inner < hi  # uniform: 46% inside; logit-normal: 68%


def test_benchmark_adapter_recovers_x0_from_an_oracle_network():
    """k_denoiser's VE (eps) and CONST (flow) views turn exact network outputs into the exact clean latent."""
    torch.manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    ac = alphas_cumprod("ddpm_linear").float()
    table = discrete_sigmas("ddpm_linear")

    def eps_net(x_in, t, y):  # sees sqrt(ac) x0 + sqrt(1 - ac) eps at integer DDPM step t
        a = ac[t.long()].view(-1, 1, 1, 1)
        return (x_in - a.sqrt() * x0) / (1 - a).sqrt()

    def flow_net(x, timestep, y):  # ComfyUI CONST output eps - x0 at sigma = timestep / 1000
        s = (timestep / 1000).view(-1, 1, 1, 1)
        return (x - (1 - s) * x0) / s - x0

    for i in (0, 250, 999):
        sigma = table[i].expand(3)
        d = k_denoiser(_Callable(eps_net, "eps"), None)(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma)
        assert torch.allclose(d, x0, atol=1e-3 * max(1.0, float(table[i])))
    for s in (0.9, 0.5, 0.1):
        sigma = torch.full((3,), s)
        d = k_denoiser(_Callable(flow_net, "sit_velocity"), None)((1 - s) * x0 + s * noise, sigma)
        assert torch.allclose(d, x0, atol=1e-4)


class _Callable:
    """A stand-in DenoiserNet: info.prediction / info.beta_schedule and a forward(x, timestep, y)."""

    def __init__(self, fn, prediction: str):
        self.fn = fn
        self.info = types.SimpleNamespace(prediction=prediction, beta_schedule="ddpm_linear")

    def __call__(self, x, t, y):
        return self.fn(x, t, y)


def test_parallel_glyph_rendering_gives_the_same_batches():
    """--workers renders the training pools in forked processes; each batch must equal the serial render."""
    from training.common import render_batches
    specs = [(12, 5), (7, 9), (3, 40_000_001)]
    serial, parallel = render_batches(specs, workers=0), render_batches(specs, workers=2)
    assert len(parallel) == len(specs)
    for (x, y), (px, py) in zip(serial, parallel):
        assert torch.equal(x, px) and torch.equal(y, py)


def test_ema_averages_parameters_and_copies_buffers():
    """An EMA over a model whose buffer holds -inf (VAR's block-causal mask) keeps that buffer intact: averaging
    it gave NaN (lerp(-inf, -inf) is NaN). Parameters are averaged."""
    from training.common import EMA

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))
            self.register_buffer("mask", torch.tensor([0.0, -torch.inf, 0.0]))

    net = Net()
    ema = EMA(net, 0.5)
    with torch.no_grad():
        net.w.fill_(1.0)
    ema.update(net)
    assert torch.equal(ema.shadow["w"], torch.full((3,), 0.5))
    assert torch.equal(ema.shadow["mask"], net.mask)
