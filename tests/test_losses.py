"""Loss primitives of METHOD §4 on hand-computed numbers, and the three perceptual-loss kinds."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gan2shape.io import CheckpointError
from gan2shape.method.losses import (PerceptualLoss, VGGWeightsMissing, discriminator_feature_loss,
                              latent_regularization, masked_l1, smoothness, vgg16_feature_keys)


# ----------------------------------------------------------------------------- masked L1

def test_masked_l1_known_numbers():
    x = torch.zeros(2, 3, 2, 2)
    y = torch.zeros(2, 3, 2, 2)
    y[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])   # inside the mask
    y[0, :, 1, 1] = 10.0                             # outside the mask
    y[1, 0, 0, 1] = 4.0
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 1
    mask[1, 0, 0, :] = 1
    # sample 0: 6 / (1 pixel · 3 channels) = 2; sample 1: 4 / (2 · 3) = 2/3
    per = masked_l1(x, y, mask, reduction="none")
    assert torch.allclose(per, torch.tensor([2.0, 2.0 / 3.0]))
    # batch: (6 + 4) / (3 + 6)
    assert torch.isclose(masked_l1(x, y, mask), torch.tensor(10.0 / 9.0))
    assert torch.isclose(masked_l1(x, y, mask[:, 0]), torch.tensor(10.0 / 9.0))  # B×H×W mask
    # no mask: plain mean
    assert torch.isclose(masked_l1(x, y), torch.tensor((6 + 30 + 4) / 24.0))
    assert torch.allclose(masked_l1(x, y, reduction="none"), torch.tensor([36 / 12.0, 4 / 12.0]))
    # empty mask -> 0, not NaN
    assert masked_l1(x, y, torch.zeros(2, 1, 2, 2)) == 0


def test_masked_l1_groups_reduce_within_each_image():
    """``groups`` = K: the batch-mean within each consecutive chunk (K stacked images)."""
    x, y = torch.zeros(4, 1, 1, 2), torch.zeros(4, 1, 1, 2)
    y[0, 0, 0, 0], y[1, 0, 0, 1], y[2, 0, 0, :] = 2.0, 4.0, 1.0
    mask = torch.ones(4, 1, 1, 2)
    mask[1, 0, 0, 0] = 0
    # image 0 = samples 0, 1: (2 + 4) / (2 + 1); image 1 = samples 2, 3: 2 / (2 + 2)
    assert torch.allclose(masked_l1(x, y, mask, groups=2), torch.tensor([2.0, 0.5]))
    assert torch.allclose(masked_l1(x, y, groups=2), torch.tensor([6 / 4.0, 2 / 4.0]))  # no mask
    assert torch.isclose(masked_l1(x, y, mask, groups=1), masked_l1(x, y, mask))
    for i in range(2):
        assert torch.isclose(masked_l1(x, y, mask, groups=2)[i], masked_l1(x[2 * i:2 * i + 2], y[2 * i:2 * i + 2],
                                                                           mask[2 * i:2 * i + 2]))


def test_masked_l1_gradient():
    x = torch.zeros(1, 3, 2, 2, requires_grad=True)
    masked_l1(x, torch.ones(1, 3, 2, 2), torch.ones(1, 1, 2, 2)).backward()
    assert torch.allclose(x.grad, torch.full_like(x, -1 / 12.0))


# ----------------------------------------------------------------------------- smoothness

def test_smoothness_ramp_and_quadratic():
    r = torch.arange(6.0).view(1, 6, 1)
    c = torch.arange(5.0).view(1, 1, 5)
    ramp = 0.3 * r - 0.7 * c + 2.0
    assert smoothness(ramp).abs() < 1e-6
    # X = r² + c²: Dxx = 2 everywhere, Dyy = 2 everywhere, mixed terms 0
    quad = (r ** 2 + c ** 2).expand(2, 6, 5).clone()
    assert torch.isclose(smoothness(quad), torch.tensor(4.0))
    assert torch.allclose(smoothness(quad.unsqueeze(1), reduction="none"), torch.tensor([4.0, 4.0]))
    # X = r·c: Dxy = Dyx = 1, pure terms 0
    assert torch.isclose(smoothness(r * c), torch.tensor(2.0))


# ----------------------------------------------------------------------------- L_D, latent reg

def test_discriminator_feature_loss_known():
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1          # top-left quadrant
    # feature 1: size 4 (kernel 1), 1 channel, diff 1 everywhere -> 4/4 = 1
    fq1, fp1 = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    # feature 2: size 2 (kernel 2), 2 channels; pooled mask = [[1,0],[0,0]]
    fq2 = torch.zeros(1, 2, 2, 2)
    fq2[0, :, 0, 0] = torch.tensor([3.0, 1.0])
    fq2[0, :, 1, 1] = 100.0          # masked out
    fp2 = torch.zeros(1, 2, 2, 2)
    # (3 + 1) / (1 · 2 channels) = 2
    loss = discriminator_feature_loss([fq1, fq2], [fp1, fp2], mask)
    assert torch.isclose(loss, torch.tensor(3.0))
    # two stacked images: each image's loss is its own (the second has no difference at all)
    two = discriminator_feature_loss([torch.cat([fq1, fp1]), torch.cat([fq2, fp2])],
                                     [torch.cat([fp1, fp1]), torch.cat([fp2, fp2])], mask.repeat(2, 1, 1, 1), groups=2)
    assert torch.allclose(two, torch.tensor([3.0, 0.0]))
    # partial pooling: mask of 1 pixel in a 2×2 block -> weight 0.25
    m2 = torch.zeros(1, 1, 4, 4)
    m2[0, 0, 0, 0] = 1
    l2 = discriminator_feature_loss([fq2], [fp2], m2, reduction="none")
    assert torch.allclose(l2, torch.tensor([0.25 * 4 / (0.25 * 2)]))
    # features of P are detached
    fq = fq2.clone().requires_grad_(True)
    fp = fp2.clone().requires_grad_(True)
    discriminator_feature_loss([fq], [fp], mask).backward()
    assert fq.grad is not None and fp.grad is None


def test_latent_regularization():
    dw = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    assert torch.isclose(latent_regularization(dw), torch.tensor(14.0 / 4))


# ----------------------------------------------------------------------------- perceptual

@pytest.fixture(scope="module")
def fake_vgg_file(tmp_path_factory):
    """A torchvision-layout VGG16 state_dict with random weights (features only, plus a stub classifier key)."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)  # real files carry classifier.* too: ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def lpips_loss(fake_vgg_file):
    return PerceptualLoss("lpips_vgg", vgg_path=fake_vgg_file[0])


def test_vgg16_feature_keys_match_torchvision(fake_vgg_file):
    _, sd = fake_vgg_file
    keys = vgg16_feature_keys()
    assert len(keys) == 26
    assert {k: tuple(v.shape) for k, v in sd.items() if k.startswith("features.")} == keys


def test_lpips_missing_or_bad_file(tmp_path, fake_vgg_file):
    with pytest.raises(FileNotFoundError, match="discriminator"):
        PerceptualLoss("lpips_vgg", vgg_path=None)
    with pytest.raises(VGGWeightsMissing, match="none"):
        PerceptualLoss("lpips_vgg", vgg_path=tmp_path / "nope.pth")
    _, sd = fake_vgg_file
    bad = dict(sd)
    bad["features.28.weight"] = torch.zeros(512, 512, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth"):
        PerceptualLoss("lpips_vgg", vgg_path=tmp_path / "bad.pth")
    del bad["features.0.bias"]
    torch.save(bad, tmp_path / "bad2.pth")
    with pytest.raises(CheckpointError, match="features.0.bias"):
        PerceptualLoss("lpips_vgg", vgg_path=tmp_path / "bad2.pth")


def test_lpips_weights_loaded_and_frozen(lpips_loss, fake_vgg_file):
    _, sd = fake_vgg_file
    net = lpips_loss.net
    assert torch.equal(getattr(net.net.slice1, "0").weight, sd["features.0.weight"])
    assert torch.equal(getattr(net.net.slice5, "28").bias, sd["features.28.bias"])
    assert torch.equal(getattr(net.net.slice3, "14").weight, sd["features.14.weight"])
    assert net.lin0.model[1].weight.min() >= 0  # linear heads from the wheel (non-negative)
    assert not any(p.requires_grad for p in lpips_loss.parameters())
    lpips_loss.train()
    assert not net.training


def test_lpips_values(lpips_loss):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert lpips_loss(x, x).abs() < 1e-6
        d = lpips_loss(x, y, reduction="none")
        assert d.shape == (2,) and (d > 0).all()
        assert torch.allclose(lpips_loss(y, x, reduction="none"), d, atol=1e-6)
        assert torch.isclose(lpips_loss(x, y), d.mean())
        # masking by multiplication: pixels outside the mask do not matter
        mask = torch.zeros(2, 1, 16, 16)
        mask[:, :, 4:12, 4:12] = 1
        y2 = torch.where(mask.bool(), x, y)
        assert lpips_loss(x, y2, mask).abs() < 1e-6
        assert torch.allclose(lpips_loss(x, y, mask, "none"), lpips_loss(x * mask, y * mask, None, "none"))


def test_lpips_gradient(lpips_loss):
    torch.manual_seed(2)
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    lpips_loss(x, torch.zeros(1, 3, 16, 16)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


class FakeDiscriminator(nn.Module):
    """Two stride-2 conv 'residual blocks' with a features(x, n) method."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 6, 3, 2, 1), nn.Conv2d(6, 6, 3, 2, 1)])

    def features(self, x, n):
        out = []
        for conv in self.convs[:n]:
            x = F.leaky_relu(conv(x), 0.2)
            out.append(x)
        return out


def test_discriminator_perceptual():
    torch.manual_seed(3)
    disc = FakeDiscriminator()
    loss = PerceptualLoss("discriminator", discriminator=disc, ftr_num=2)
    assert not any(p.requires_grad for p in disc.parameters())
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    assert loss(x, x).abs() < 1e-6
    d = loss(x, y, reduction="none")
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(loss(y, x, reduction="none"), d, atol=1e-6)
    # hand formula
    ref = 0
    for a, b in zip(disc.features(x, 2), disc.features(y, 2)):
        na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        ref = ref + ((na - nb) ** 2).sum(1).mean((1, 2))
    assert torch.allclose(d, ref, atol=1e-6)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8] = 1
    assert loss(x, torch.where(mask.bool(), x, y), mask).abs() < 1e-6
    loss(x, y).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        PerceptualLoss("discriminator")


def test_none_perceptual():
    loss = PerceptualLoss("none")
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    assert loss(x, x + 1).item() == 0 and not loss(x, x).requires_grad
    assert torch.equal(loss(x, x + 1, reduction="none"), torch.zeros(3))
    with pytest.raises(ValueError):
        PerceptualLoss("vgg_relu3")
