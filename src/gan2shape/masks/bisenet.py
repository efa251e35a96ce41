"""BiSeNet face parser (CelebAMask-HQ, 19 classes), state_dict-compatible with ``bisenet.pth``.

METHOD §7: a ResNet-18 context path (features at /8, /16, /32), attention
refinement modules on /16 and /32, a global-context branch, a feature fusion module and three
output heads (main + two auxiliary), each upsampled bilinearly (``align_corners=True``) to the
input size. The spatial path of the paper is not used: the /8 ResNet feature takes its place.

No weights are downloaded: the backbone starts random and the official checkpoint overrides it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs) with a 1×1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(y + short)


class ResNet18(nn.Module):
    """ResNet-18 trunk returning the /8, /16 and /32 feature maps (128, 256, 512 channels)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return f8, f16, f32


class AttentionRefinement(nn.Module):
    """3×3 ConvBNReLU, then a channel gate from global average pooling (1×1 conv + BN + sigmoid)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * gate


class ContextPath(nn.Module):
    """ResNet-18 + ARMs + global context; returns (/8 backbone feature, /8 and /16 context features)."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x: torch.Tensor):
        f8, f16, f32 = self.resnet(x)
        # global context (1×1), broadcast over the /32 map
        ctx = self.conv_avg(f32.mean(dim=(2, 3), keepdim=True))
        s32 = self.arm32(f32) + ctx
        up32 = self.conv_head32(F.interpolate(s32, size=f16.shape[-2:], mode="nearest"))
        s16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(s16, size=f8.shape[-2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusion(nn.Module):
    """Concatenate, 1×1 ConvBNReLU, then add a channel-attention-weighted copy (reduction /4)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat * gate + feat


class OutputHead(nn.Module):
    """3×3 ConvBNReLU + 1×1 classifier (no bias)."""

    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet. ``forward`` returns ``(out, out16, out32)``, each ``B×n_classes×H×W``;
    the parsing pipeline uses ``out`` (the main head)."""

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)
        self.conv_out32 = OutputHead(128, 64, n_classes)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        f8, c8, c16 = self.cp(x)
        outs = (self.conv_out(self.ffm(f8, c8)), self.conv_out16(c8), self.conv_out32(c16))
        return tuple(F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outs)
