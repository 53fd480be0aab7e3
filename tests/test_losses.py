"""Losses, discriminator and HRF perceptual network (training/losses.py, discriminator.py, perceptual.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glama_deploy.model import build_generator
from glama_deploy.model.weights import WeightsError
from training.discriminator import NLayerDiscriminator
from training.losses import (
    DISCR_LOG_KEYS,
    GEN_LOG_KEYS,
    JointLoss,
    LossConfig,
    adversarial_generator_loss,
    discriminator_loss,
    feature_matching_loss,
    focal_frequency_loss,
    l1_known_loss,
    r1_penalty,
    total_variation_loss,
)
from training.perceptual import ResNet50Dilated, ResNetPL, build_perceptual


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine is shared: one thread is faster than two oversubscribed ones for these sizes.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomize(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A synthetic state dict for ``module``: random weights and plausible BN statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v.clone()
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            state[k] = torch.randn(v.shape, generator=g) * 0.1
        elif v.dim() == 1:  # BN affine
            state[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.5 if k.endswith("weight") \
                else torch.randn(v.shape, generator=g) * 0.1
        else:
            fan_in = v[0].numel()
            state[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
    return state


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """One synthetic encoder file in the official format (a plain state dict .pth), stored where LaMa
    keeps it below its weights directory, without BatchNorm ``num_batches_tracked`` counters
    (as files saved by old PyTorch). Returns (weights dir, file, state)."""
    root = tmp_path_factory.mktemp("weights")
    d = root / "ade20k" / "ade20k-resnet50dilated-ppm_deepsup"
    d.mkdir(parents=True)
    state = {k: v for k, v in _randomize(ResNet50Dilated(), 1).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, d / "encoder_epoch_20.pth")
    return root, d / "encoder_epoch_20.pth", state


# --------------------------------------------------------------------------- discriminator


def test_discriminator_params_and_features():
    d = NLayerDiscriminator()
    assert sum(p.numel() for p in d.parameters()) == 6_962_369
    keys = d.state_dict().keys()
    for k in ("model0.0.weight", "model1.0.weight", "model1.1.running_mean", "model4.1.weight",
              "model5.0.bias"):
        assert k in keys
    assert not any(k.startswith("model6") for k in keys)
    logits, feats = d(torch.rand(2, 3, 64, 64))
    assert len(feats) == 5
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [33, 17, 9, 5, 6]
    assert logits.shape == (2, 1, 7, 7)


# --------------------------------------------------------------------------- perceptual


def test_encoder_official_keys_and_shapes():
    sd = ResNet50Dilated().state_dict()
    expected = {
        "conv1.weight": (64, 3, 3, 3), "bn1.running_mean": (64,), "conv2.weight": (64, 64, 3, 3),
        "conv3.weight": (128, 64, 3, 3), "bn3.running_var": (128,),
        "layer1.0.conv1.weight": (64, 128, 1, 1), "layer1.0.downsample.0.weight": (256, 128, 1, 1),
        "layer1.0.downsample.1.running_mean": (256,), "layer2.3.conv3.weight": (512, 128, 1, 1),
        "layer3.5.bn2.weight": (256,), "layer3.0.downsample.0.weight": (1024, 512, 1, 1),
        "layer4.0.conv2.weight": (512, 512, 3, 3), "layer4.2.conv3.weight": (2048, 512, 1, 1),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith(("fc.", "layer5")) for k in sd)
    assert "layer3.6.conv1.weight" not in sd and "layer4.3.conv1.weight" not in sd
    enc = ResNet50Dilated()
    assert enc.layer3[0].conv2.stride == (1, 1) and enc.layer3[0].conv2.dilation == (1, 1)
    assert enc.layer3[1].conv2.dilation == (2, 2) and enc.layer4[0].conv2.dilation == (2, 2)
    assert enc.layer4[2].conv2.dilation == (4, 4) and enc.layer4[0].downsample[0].stride == (1, 1)
    with torch.no_grad():
        feats = enc.eval()(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 8, 8), (512, 4, 4), (1024, 4, 4), (2048, 4, 4)]


def test_resnetpl_loads_synthetic_weights_strictly(encoder_file):
    _, path, state = encoder_file
    pl = ResNetPL(path)
    for k in ("conv1.weight", "layer2.1.bn2.running_var", "layer4.2.conv3.weight"):
        assert torch.equal(pl.impl.state_dict()[k], state[k])
    assert all(not p.requires_grad for p in pl.parameters())
    pl.train()
    assert not pl.impl.training  # stays in eval inside a training module

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def by_hand(enc: nn.Module) -> float:
        # the loss is the sum over layer1..4 of mse between features of normalised inputs
        fx, fy = enc.eval()((x - mean) / std), enc((y - mean) / std)
        return float(sum(F.mse_loss(a, b) for a, b in zip(fx, fy, strict=True)))

    ref = ResNet50Dilated()
    with torch.no_grad():
        fresh = by_hand(ref)  # same architecture, default init
        ref.load_state_dict({**ref.state_dict(), **state})
        expected = by_hand(ref)
        got = float(pl(x, y))
        assert float(pl(x, x)) == 0.0
    assert math.isclose(got, expected, rel_tol=1e-5)
    assert got > 0 and abs(got - fresh) > 1e-3 * got  # the loaded weights are the ones in use
    # gradient flows to the prediction, not to the frozen encoder
    xp = x.clone().requires_grad_(True)
    pl(xp, y).backward()
    assert xp.grad is not None and xp.grad.abs().sum() > 0
    assert all(p.grad is None for p in pl.parameters())


def test_resnetpl_errors_and_build(tmp_path, encoder_file):
    root, path, state = encoder_file
    assert build_perceptual(None) is None
    assert build_perceptual("") is None
    pl = build_perceptual(str(root))  # a LaMa-style weights directory
    assert isinstance(pl, ResNetPL) and torch.equal(pl.impl.conv1.weight, state["conv1.weight"])
    with pytest.raises(WeightsError, match="not found"):
        ResNetPL(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="holds no encoder_epoch_20.pth"):
        ResNetPL(tmp_path)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        ResNetPL(bad)
    partial = tmp_path / "partial.pth"
    torch.save({"conv1.weight": state["conv1.weight"], "bn1.weight": torch.zeros(32),
                "fc.weight": torch.zeros(150, 2048)}, partial)
    with pytest.raises(WeightsError, match=r"partial\.pth.*missing keys: bn1\.bias.*unexpected keys: fc\.weight"
                                           r".*shape mismatches: bn1\.weight: file \(32,\) vs model \(64,\)"):
        ResNetPL(partial)


# --------------------------------------------------------------------------- pure functions


def test_ffl_identical_zero_and_known_spectra():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    assert float(focal_frequency_loss(x, x)) == 0.0
    # constant c vs zeros: only the DC bin differs, |F| = c*sqrt(HW), weight 1 -> mean = c^2
    c = 0.7
    assert math.isclose(float(focal_frequency_loss(torch.full((1, 1, 8, 8), c), torch.zeros(1, 1, 8, 8))),
                        c * c, rel_tol=1e-5)
    # a*cos(2pi*2n/W) + b*cos(2pi*5n/W) vs zeros: peaks a*sqrt(HW)/2 (weight 1) and b*sqrt(HW)/2
    # (weight b/a), two bins each -> (2*a^2/4 + 2*(b/a)*b^2/4) = a^2/2 + b^3/(2a)
    a, b, h, w = 0.8, 0.3, 4, 16
    n = torch.arange(w, dtype=torch.float32)
    row = a * torch.cos(2 * math.pi * 2 * n / w) + b * torch.cos(2 * math.pi * 5 * n / w)
    img = row.expand(1, 1, h, w).clone()
    val = float(focal_frequency_loss(img, torch.zeros_like(img)))
    assert math.isclose(val, a * a / 2 + b**3 / (2 * a), rel_tol=1e-4)
    # alpha = 0: every differing bin gets weight 1 -> plain mean |dF|^2 = mean(x^2) (Parseval)
    val0 = float(focal_frequency_loss(img, torch.zeros_like(img), alpha=0.0))
    assert math.isclose(val0, float(img.square().mean()), rel_tol=1e-4)
    # patch_factor 2 on a 2x2 tiling of the same pattern equals the whole-image value
    tiled = img.repeat(1, 1, 2, 2)
    assert math.isclose(float(focal_frequency_loss(tiled, torch.zeros_like(tiled), patch_factor=2)), val,
                        rel_tol=1e-4)


def test_tv_constant_zero_and_hand_example():
    assert float(total_variation_loss(torch.full((2, 3, 5, 7), 0.3))) == 0.0
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # per pixel (dx^2 + dy^2): (0,0) 1+4, (0,1) 0+9, (1,0) 4+0, (1,1) 0 -> sum 18
    assert math.isclose(float(total_variation_loss(x)), 18 / 4, rel_tol=1e-6)
    assert math.isclose(float(total_variation_loss(x, reduction="sum")), 18, rel_tol=1e-6)
    assert math.isclose(float(total_variation_loss(x, beta=1.0)), (math.sqrt(5) + 3 + 2 + 1e-4) / 4, rel_tol=1e-5)


def test_l1_ignores_holes():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 8, 8, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    pred = target + mask * torch.rand(1, 3, 8, 8, generator=g)  # differs only in the hole
    assert float(l1_known_loss(pred, target, mask, 10.0, 0.0)) == 0.0
    pred2 = pred.clone()
    pred2[0, 1, 0, 0] += 0.5  # one known pixel off by 0.5
    assert math.isclose(float(l1_known_loss(pred2, target, mask, 10.0, 0.0)), 10 * 0.5 / (3 * 64), rel_tol=1e-5)
    assert float(l1_known_loss(pred, target, mask, 10.0, 1.0)) > 0  # weight_missing > 0 sees the hole


class SubsampleD(nn.Module):
    """A fake discriminator: logits = channel 0 at even positions; features = [logits * 2]."""

    def forward(self, x):
        logits = x[:, :1, ::2, ::2]
        return logits, [logits * 2]


def _sp(v: float) -> float:
    return math.log1p(math.exp(v))


def test_discriminator_mask_weighting_hand_checked():
    fake = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    real = torch.zeros(1, 1, 2, 2)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1  # top-left quadrant is the hole -> nearest 2x2: [[1, 0], [0, 0]]
    total, parts = discriminator_loss(real, fake, mask, r1=0.0, r1_coef=0.001)
    exp_fake = (_sp(1.0) + _sp(2.0) + _sp(-0.5) + _sp(-3.0)) / 4  # only the hole position is "fake"
    assert math.isclose(float(parts["fake"]), exp_fake, rel_tol=1e-6)
    assert math.isclose(float(parts["real"]), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(total), exp_fake + math.log(2), rel_tol=1e-6)
    _, parts_all = discriminator_loss(real, fake, mask, mask_as_fake_target=False)
    assert math.isclose(float(parts_all["fake"]), (_sp(1.0) + _sp(-2.0) + _sp(0.5) + _sp(3.0)) / 4, rel_tol=1e-6)
    assert math.isclose(float(adversarial_generator_loss(fake)),
                        (_sp(-1.0) + _sp(2.0) + _sp(-0.5) + _sp(-3.0)) / 4, rel_tol=1e-6)

    # Same numbers through JointLoss with the subsampling discriminator.
    pred = torch.zeros(1, 3, 4, 4)
    pred[0, 0, ::2, ::2] = fake[0, 0]
    cfg = LossConfig(r1=0.0)
    jl = JointLoss(cfg, SubsampleD())
    loss, logs = jl.discriminator_loss(pred, torch.zeros(1, 3, 4, 4), mask)
    assert set(logs) == set(DISCR_LOG_KEYS)
    assert math.isclose(logs["discr_fake"], exp_fake, rel_tol=1e-6)
    assert math.isclose(float(loss), exp_fake + math.log(2), rel_tol=1e-6)


def test_r1_linear_discriminator():
    torch.manual_seed(0)
    lin = nn.Conv2d(3, 1, kernel_size=4, bias=True)  # 4x4 input -> one logit: linear in x

    class LinearD(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x), [x]

    wn2 = float(lin.weight.detach().square().sum())
    real = torch.rand(3, 3, 4, 4, requires_grad=True)
    assert math.isclose(float(r1_penalty(lin(real), real).detach()), wn2, rel_tol=1e-5)
    with torch.no_grad():
        assert float(r1_penalty(lin(real), real)) == 0.0

    coef = 0.5
    jl = JointLoss(LossConfig(r1=coef, mask_as_fake_target=False), LinearD())
    target = torch.rand(3, 3, 4, 4)
    pred = torch.rand(3, 3, 4, 4)
    mask = torch.ones(3, 1, 4, 4)
    loss, logs = jl.discriminator_loss(pred, target, mask)
    assert math.isclose(logs["discr_r1"], coef * wn2, rel_tol=1e-5)
    assert not target.requires_grad  # the caller's tensor is untouched
    loss.backward()
    # d/dw of coef*||w||^2 is 2*coef*w; the softplus terms add the data part
    with torch.no_grad():
        r, f = lin(target), lin(pred)
        sig_r, sig_f = torch.sigmoid(-r).view(-1, 1, 1, 1), torch.sigmoid(f).view(-1, 1, 1, 1)
        data = (-(sig_r * target).mean(0) + (sig_f * pred).mean(0)).unsqueeze(0)
    assert torch.allclose(lin.weight.grad, 2 * coef * lin.weight + data, atol=1e-5)


def test_r1_under_fp16_needs_the_loss_scale():
    """In half precision the gradient of the logits with respect to the image underflows to 0 when
    D's weights are small, and R1 silently vanishes; with the AMP loss scale passed in, the inner
    backward runs on scaled logits and the penalty is right (what the trainer does under AMP)."""
    w = torch.full((1, 3, 4, 4), 1e-3).half()
    real = torch.rand(2, 3, 4, 4).half().requires_grad_(True)

    def logits():  # d logit / d pixel = 1e-5 * 1e-3 = 1e-8: below fp16's smallest subnormal (6e-8)
        return F.conv2d(real, w) * 1e-5

    exact = 48 * (float(w[0, 0, 0, 0]) * 1e-5) ** 2  # ||gradient||^2 per sample
    assert float(r1_penalty(logits(), real)) == 0.0  # unscaled: underflow
    scaled = float(r1_penalty(logits(), real, grad_scale=1024.0))
    assert math.isclose(scaled, exact, rel_tol=0.05), (scaled, exact)
    # and the JointLoss path passes it through
    seen = {}

    class D(nn.Module):
        def forward(self, x):
            return (F.conv2d(x.half(), w) * 1e-5).float(), [x]

    jl = JointLoss(LossConfig(r1=1.0, mask_as_fake_target=False), D())
    orig = r1_penalty.__globals__["r1_penalty"]

    def spy(lg, im, grad_scale=1.0):
        seen["scale"] = grad_scale
        return orig(lg, im, grad_scale)

    r1_penalty.__globals__["r1_penalty"] = spy
    try:
        _, logs = jl.discriminator_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.ones(2, 1, 4, 4),
                                        grad_scale=1024.0)
    finally:
        r1_penalty.__globals__["r1_penalty"] = orig
    assert seen["scale"] == 1024.0 and logs["discr_r1"] > 0


def test_feature_matching():
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(2, 4, 5, 5, generator=g), torch.rand(2, 8, 3, 3, generator=g)]
    assert float(feature_matching_loss(feats, [f.clone() for f in feats])) == 0.0
    shifted = [feats[0] + 1.0, feats[1]]
    assert math.isclose(float(feature_matching_loss(shifted, feats)), 0.5, rel_tol=1e-6)  # (1 + 0) / 2


def test_loss_config_validation():
    assert LossConfig().pl == 100 and LossConfig().fm == 30
    with pytest.raises(ValueError, match="loss.adv"):
        LossConfig(adv=-1)
    with pytest.raises(ValueError, match="unknown loss keys"):
        LossConfig.from_dict({"advv": 1})
    assert LossConfig.from_dict({"ffl": 2}).ffl == 2


# --------------------------------------------------------------------------- joint loss


def _batch(seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, size, size, generator=g)
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, 8:20, 4:28] = 1
    mask[1, :, ::2] = 1
    return target, mask


def test_joint_loss_backprops_to_generator(encoder_file):
    torch.manual_seed(0)
    gen = build_generator("tiny")
    disc = NLayerDiscriminator()
    jl = JointLoss(LossConfig(), disc, ResNetPL(encoder_file[1]))
    assert jl.active_terms() == ["l1", "adv", "fm", "pl", "tv", "ffl"]
    target, mask = _batch()
    pred = gen(target, mask)
    loss, logs = jl.generator_loss(pred, target, mask)
    assert set(logs) == set(GEN_LOG_KEYS)
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in logs.values())
    assert all(logs[k] > 0 for k in ("gen_l1", "gen_adv", "gen_fm", "gen_pl", "gen_tv", "gen_ffl"))
    assert math.isclose(logs["gen_lama"], logs["gen_l1"] + logs["gen_adv"] + logs["gen_fm"] + logs["gen_pl"],
                        rel_tol=1e-5)
    assert math.isclose(logs["gen_total"], logs["gen_lama"] + logs["gen_tv"] + logs["gen_ffl"], rel_tol=1e-5)
    loss.backward()
    grads = [p.grad for p in gen.parameters() if p.requires_grad]
    assert all(gr is not None for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0
    assert all(p.grad is None for p in jl.perceptual.parameters())

    disc.zero_grad()
    dloss, dlogs = jl.discriminator_loss(pred, target, mask)
    assert set(dlogs) == set(DISCR_LOG_KEYS) and torch.isfinite(dloss) and dlogs["discr_r1"] > 0
    gen.zero_grad()
    dloss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in gen.parameters())  # pred detached
    assert all(p.grad is not None for p in disc.parameters())


class CountingD(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = NLayerDiscriminator(ndf=8, n_layers=2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_joint_loss_zero_weights_switch_terms_off():
    target, mask = _batch(1)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    d = CountingD()
    only_tv = LossConfig(l1_known=0, adv=0, fm=0, pl=0, ffl=0, tv=3.0)
    loss, logs = JointLoss(only_tv, d, None).generator_loss(pred, target, mask)
    assert d.calls == 0  # no adversarial / feature-matching term -> D never runs
    assert math.isclose(float(loss), 3.0 * float(total_variation_loss(pred)), rel_tol=1e-6)
    assert all(logs[k] == 0.0 for k in ("gen_l1", "gen_adv", "gen_fm", "gen_pl", "gen_ffl"))

    only_ffl = LossConfig(l1_known=0, adv=0, fm=0, tv=0, ffl=2.0)
    loss, _ = JointLoss(only_ffl, d, None).generator_loss(pred, target, mask)
    assert math.isclose(float(loss), 2.0 * float(focal_frequency_loss(pred, target)), rel_tol=1e-6)

    no_lama = LossConfig(lama=0.0)
    loss, logs = JointLoss(no_lama, d, None).generator_loss(pred, target, mask)
    assert d.calls == 0 and logs["gen_lama"] == 0.0
    assert math.isclose(float(loss), logs["gen_tv"] + logs["gen_ffl"], rel_tol=1e-6)

    # pl weight without a perceptual network is off; adv only calls D once (no real pass)
    adv_only = LossConfig(l1_known=0, fm=0, tv=0, ffl=0, lama=0.5)
    loss, logs = JointLoss(adv_only, d, None).generator_loss(pred, target, mask)
    assert d.calls == 1 and logs["gen_pl"] == 0.0 and logs["gen_adv"] > 0
    assert math.isclose(float(loss.detach()), 0.5 * logs["gen_adv"], rel_tol=1e-6)

    with pytest.raises(ValueError, match="mask"):
        JointLoss(LossConfig(), d, None).generator_loss(pred, target, mask[:, :, :16])
