"""PSPNet-50 (hszhao/semseg layout), state_dict-compatible with ``pspnet_voc.pth`` / ``pspnet_ade20k.pth``.

METHOD §7: a deep-stem ResNet-50 (three 3×3 convs 3→64→64→128, max-pool), its
layer3/layer4 dilated by 2/4 instead of strided (output stride 8), a pyramid pooling module with
bins (1, 2, 3, 6) (each 2048→512, upsampled ``align_corners=True``, concatenated to 4096 ch), a
3×3 head 4096→512 + Dropout2d(0.1) + 1×1 classifier, and ×``zoom_factor`` bilinear upsampling
(``align_corners=True``) to ``(H−1)/8·zoom+1``. Inputs must satisfy ``(H−1) % 8 == 0``.

The auxiliary head on layer3 (``aux.*``) exists so the official checkpoint loads strictly; the
eval forward returns only the main output. Official files keep the keys under
``ckpt["state_dict"]`` with a DataParallel ``module.`` prefix (stripped by the loader).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride/dilation) → 1×1 (×4) bottleneck with an optional projection shortcut."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(y + short)


def _layer(cin: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    mods = [Bottleneck(cin, planes, stride, dilation)]
    mods += [Bottleneck(planes * 4, planes, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


class PPM(nn.Module):
    """Pyramid pooling: per bin, adaptive average pool + 1×1 conv + BN + ReLU, upsampled and
    concatenated with the input (keys ``features.<i>.{1,2}.*``)."""

    def __init__(self, cin: int, reduction: int, bins: Sequence[int]):
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, reduction, 1, bias=False),
                          nn.BatchNorm2d(reduction), nn.ReLU(inplace=True))
            for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x] + [F.interpolate(f(x), size=size, mode="bilinear", align_corners=True) for f in self.features]
        return torch.cat(outs, dim=1)


def _head(cin: int, mid: int, n_classes: int) -> nn.Sequential:
    # indices 0 conv, 1 BN, 2 ReLU, 3 Dropout2d, 4 classifier (matches the official key numbering)
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Dropout2d(0.1), nn.Conv2d(mid, n_classes, 1))


def check_input_size(h: int, w: int) -> None:
    """PSPNet needs ``(size − 1) % 8 == 0`` on both sides (e.g. 473, 65, 97)."""
    if (h - 1) % 8 or (w - 1) % 8:
        raise ValueError(f"PSPNet input size {h}x{w} is invalid: (size - 1) must be divisible by 8 "
                         f"(e.g. 473, 97, 65); nearest valid: {((h - 1) // 8) * 8 + 1}")


class PSPNet(nn.Module):
    """PSPNet with a deep-stem dilated ResNet. Eval forward: ``B×n_classes×H×W`` logits; train
    forward with ``use_aux``: ``(main, aux)`` both at the output size."""

    def __init__(self, n_classes: int, layers: int = 50, bins: Sequence[int] = (1, 2, 3, 6), zoom_factor: int = 8,
                 use_aux: bool = True):
        super().__init__()
        if layers not in _DEPTHS:
            raise ValueError(f"PSPNet layers must be one of {sorted(_DEPTHS)}, got {layers}")
        if zoom_factor not in (1, 2, 4, 8):
            raise ValueError(f"zoom_factor must be 1, 2, 4 or 8, got {zoom_factor}")
        if 2048 % len(bins):
            raise ValueError(f"2048 channels cannot be split over {len(bins)} bins")
        self.n_classes, self.zoom_factor, self.use_aux = n_classes, zoom_factor, use_aux
        d = _DEPTHS[layers]
        # deep stem: keys layer0.{0,1,3,4,6,7}
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = _layer(128, 64, d[0], 1, 1)
        self.layer2 = _layer(256, 128, d[1], 2, 1)
        self.layer3 = _layer(512, 256, d[2], 1, 2)  # dilated instead of strided
        self.layer4 = _layer(1024, 512, d[3], 1, 4)
        self.ppm = PPM(2048, 2048 // len(bins), bins)
        self.cls = _head(4096, 512, n_classes)
        if use_aux:
            self.aux = _head(1024, 256, n_classes)

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        check_input_size(h, w)
        out_size = ((h - 1) // 8 * self.zoom_factor + 1, (w - 1) // 8 * self.zoom_factor + 1)
        f3 = self.layer3(self.layer2(self.layer1(self.layer0(x))))
        out = self.cls(self.ppm(self.layer4(f3)))
        if self.zoom_factor != 1:
            out = F.interpolate(out, size=out_size, mode="bilinear", align_corners=True)
        if self.training and self.use_aux:
            aux = self.aux(f3)
            if self.zoom_factor != 1:
                aux = F.interpolate(aux, size=out_size, mode="bilinear", align_corners=True)
            return out, aux
        return out
