"""The default detector network: a tiny CenterNet-style CNN (stride 4, ~100k parameters).

Design for <= 5 ms per 512x512 frame on 2 CPU cores (ONNX Runtime):

* two plain stride-2 3x3 convolutions bring the image to 1/4 resolution at once, with
  few channels (12, 24): the full-resolution work is the most expensive part;
* deeper levels (1/8, 1/16, 1/32) use depthwise-separable blocks, where the channels
  are cheap; the 1/32 level gives a receptive field wide enough for ~90 px nuclei;
* a small top-down path (upsampling + add) brings context back to 1/4, where
  the heads predict a sigmoid centre heatmap, box size (w, h in input pixels, through
  ``exp`` so it is always positive) and the sub-cell centre offset.

``antialias=True`` (what ``inscope train`` builds) makes the outputs follow a shifted
image more closely, which is what keeps box centres still when the stage moves by a few
pixels (Zhang 2019, "Making convolutional networks shift-invariant again"): every
strided layer first low-passes its input with a fixed binomial filter, so it no longer
aliases detail finer than its output grid, and the top-down path upsamples bilinearly
instead of copying each coarse cell into a 2 x 2 block.  The filters are fixed buffers,
not parameters; the export folds each into the strided convolution after it (a 5 x 5
kernel), so they cost no extra pass over the image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SIZE_SCALE = 16.0  # size head predicts log(size / SIZE_SCALE)
#: offset head range in output cells: offset = lo + (hi - lo) * sigmoid(logit). (-1.25, 2.25)
#: lets the 8 cells around a centre point at it too (see data.draw_targets); models
#: exported before had (0, 1): :func:`inscope.detector.train.export.model_from_onnx` tells.
OFFSET_RANGE = (-1.25, 2.25)


def offset_from_logit(off_logit: torch.Tensor,
                      offset_range: tuple[float, float] = OFFSET_RANGE) -> torch.Tensor:
    """Offset in output cells from an offset head's logits: a sigmoid spread over
    *offset_range* (a (0, 1) range adds no nodes, so older models export as they did)."""
    lo, hi = offset_range
    o = torch.sigmoid(off_logit)
    return o if (lo, hi) == (0.0, 1.0) else o * (hi - lo) + lo


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1,
            act: bool = True, padding: int | None = None) -> nn.Sequential:
    pad = k // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


#: the binomial low-pass of :class:`Blur`, (3, 3), sum 1
BLUR_KERNEL = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16


class Blur(nn.Module):
    """Fixed depthwise binomial low-pass ([1, 2, 1] x [1, 2, 1] / 16) in front of a
    strided 3 x 3 convolution (anti-aliasing: it removes what that layer's output grid
    cannot represent).

    It zero-pads its input by 2 and returns it 2 px larger on each axis, and the
    convolution after it has no padding of its own, so the pair is exactly ONE 5 x 5
    convolution (kernel = the 3 x 3 one convolved with the blur, padding 2). The export
    folds each pair into that single convolution, so the blur costs no extra pass over
    the image at inference (:func:`inscope.detector.train.export.fold_blurs`). A buffer,
    not a parameter: training cannot undo it.
    """

    kernel: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("kernel", BLUR_KERNEL.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2)), self.kernel, groups=self.channels)


class DSBlock(nn.Module):
    """Depthwise 3x3 (optionally strided / dilated) + pointwise 1x1; residual when it fits.

    With *antialias* a strided block blurs its input first (see :class:`Blur`).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1,
                 antialias: bool = False) -> None:
        super().__init__()
        pre: list[nn.Module] = [Blur(cin)] if antialias and stride > 1 else []
        self.dw = nn.Sequential(
            *pre,
            nn.Conv2d(cin, cin, 3, stride, 0 if pre else dilation, dilation=dilation,
                      groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.pw = conv_bn(cin, cout, 1, act=False)
        self.res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return F.relu(y + x if self.res else y)


class TinyCenterNet(nn.Module):
    """Input (N, 1, H, W) normalised image, H and W multiples of 32.

    Outputs a dict-free tuple ``(heatmap, size, offset)``, each (N, C|2|2, H/4, W/4):
    heatmap sigmoid-ed, size = box (w, h) in input pixels, offset = centre position
    inside its output cell in [0, 1).
    """

    def __init__(self, num_classes: int = 1, antialias: bool = False,
                 widths: tuple[int, int] = (12, 24)) -> None:
        super().__init__()
        # widths: channels at 1/2 and 1/4 resolution, where nearly all the time goes.
        # ONNX Runtime's CPU convolutions work in blocks of 16 channels on AVX-512 (8 on
        # AVX2): 24 costs as much as 32 there, 16 about 3/4 of 24 (session.run)
        c1, c2 = (int(w) for w in widths)
        c3, c4, c5 = 48, 80, 128
        h = 48
        aa = antialias
        self.antialias = aa
        self.widths = (c1, c2)
        # 1/4 resolution: the costly part, kept to few channels
        stem0 = [Blur(1), conv_bn(1, c1, 3, 2, padding=0)] if aa else [conv_bn(1, c1, 3, 2)]
        self.stem = nn.Sequential(*stem0, DSBlock(c1, c2, 2, antialias=aa),
                                  DSBlock(c2, c2))
        self.l3 = nn.Sequential(DSBlock(c2, c3, 2, antialias=aa), DSBlock(c3, c3))  # 1/8
        self.l4 = nn.Sequential(DSBlock(c3, c4, 2, antialias=aa), DSBlock(c4, c4))  # 1/16
        self.l5 = nn.Sequential(DSBlock(c4, c5, 2, antialias=aa),
                                DSBlock(c5, c5, dilation=2))  # 1/32
        self.lat5 = conv_bn(c5, h, 1)
        self.lat4 = conv_bn(c4, h, 1)
        self.lat3 = conv_bn(c3, h, 1)
        self.td4 = DSBlock(h, h)
        self.td3 = DSBlock(h, h)
        # project to c2 channels at 1/8 and upsample after: a 1x1 at 1/4 costs 4x more
        self.up2 = conv_bn(h, c2, 1, act=False)
        self.td2 = DSBlock(c2, c2)
        self.hm = nn.Conv2d(c2, num_classes, 1)
        self.size = nn.Conv2d(c2, 2, 1)
        self.offset = nn.Conv2d(c2, 2, 1)
        assert self.hm.bias is not None and self.size.bias is not None  # Conv2d(bias=True)
        nn.init.constant_(self.hm.bias, -4.0)  # start with "no object" (focal-loss prior)
        nn.init.zeros_(self.size.bias)
        #: the three heads as one convolution (export.merge_heads sets it on the copy it
        #: exports; None while training)
        self.heads: nn.Conv2d | None = None
        self.export_mode = False
        self.offset_range = OFFSET_RANGE

    def offset_from_logit(self, off_logit: torch.Tensor) -> torch.Tensor:
        """Offset in output cells from the offset head's logits (see OFFSET_RANGE)."""
        return offset_from_logit(off_logit, self.offset_range)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.antialias:
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f2 = self.stem(x)
        f3 = self.l3(f2)
        f4 = self.l4(f3)
        f5 = self.l5(f4)
        p = self.lat5(f5)
        p = self.td4(self.lat4(f4) + self._up(p))
        p = self.td3(self.lat3(f3) + self._up(p))
        p = self.td2(f2 + self._up(self.up2(p)))
        return p

    def forward(self, x: torch.Tensor):
        p = self.features(x)
        if self.heads is not None:  # merged for export (export.merge_heads): one conv
            hm_logit, log_size, off_logit = torch.split(
                self.heads(p), [self.hm.out_channels, 2, 2], dim=1)
        else:
            hm_logit = self.hm(p)
            log_size = self.size(p)
            off_logit = self.offset(p)
        if self.export_mode:
            return (torch.sigmoid(hm_logit), torch.exp(log_size) * SIZE_SCALE,
                    self.offset_from_logit(off_logit))
        return hm_logit, log_size, off_logit


def widen_offset_head(model: TinyCenterNet) -> TinyCenterNet:
    """Switch a model with the old (0, 1) offset head to :data:`OFFSET_RANGE`, in place.

    The offset logits are scaled by the ranges' ratio so the new head's slope at the
    cell centre equals the old one's (offsets near 0.5 come out unchanged); fine-tuning
    then teaches the neighbour cells their (now reachable) offsets.
    """
    lo, hi = model.offset_range
    if (lo, hi) == OFFSET_RANGE:
        return model
    ratio = (hi - lo) / (OFFSET_RANGE[1] - OFFSET_RANGE[0])
    mid_old = lo + (hi - lo) / 2
    mid_new = OFFSET_RANGE[0] + (OFFSET_RANGE[1] - OFFSET_RANGE[0]) / 2
    bias = model.offset.bias
    assert bias is not None  # Conv2d(bias=True)
    with torch.no_grad():
        model.offset.weight.mul_(ratio)
        bias.mul_(ratio)
        # the two ranges' mid-points differ by (mid_new - mid_old) cells: move the logit
        # by that offset's logit-space equivalent at the centre (slope 1/4 * span)
        bias.sub_((mid_new - mid_old) / (0.25 * (OFFSET_RANGE[1] -
                                                               OFFSET_RANGE[0])))
    model.offset_range = OFFSET_RANGE
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
