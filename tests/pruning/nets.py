"""Tiny networks that exercise every kind of channel dependency."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeqNet(nn.Module):
    """Plain CNN with a depthwise conv and a flatten into a hidden linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1, groups=16),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se1 = nn.Conv2d(cout, 4, 1)
        self.se2 = nn.Conv2d(4, cout, 1)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        scale = torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(out, 1)))))
        out = out * scale
        identity = x if self.down is None else self.down(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """Residual network with squeeze-excitation and a projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8), Block(8, 8))
        self.layer2 = nn.Sequential(Block(8, 16, stride=2), Block(16, 16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConcatNet(nn.Module):
    """DenseNet-style concatenations, a norm over the concatenation, and an inception cat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grow1 = nn.Conv2d(8, 4, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(12)
        self.grow2 = nn.Conv2d(12, 6, 3, padding=1)
        self.branch_a = nn.Conv2d(18, 4, 1)
        self.branch_b = nn.Conv2d(18, 6, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = F.relu(self.stem(x))
        x1 = F.relu(self.grow1(x0))
        c1 = torch.cat([x0, x1], dim=1)
        x2 = F.relu(self.grow2(F.relu(self.norm1(c1))))
        c2 = torch.cat([c1, x2], 1)
        y = torch.cat([self.branch_a(c2), self.branch_b(c2)], dim=1)
        y = F.relu(self.head(F.relu(self.norm2(y))))
        return self.fc(y.mean(dim=(2, 3)))


class UNet(nn.Module):
    """A small U-Net: a transposed convolution upsamples, and a skip connection is
    concatenated with what it outputs."""

    def __init__(self, *, num_classes: int = 2, sized: bool = False) -> None:
        super().__init__()
        self.sized = sized  # upsample to the skip connection's size(), channels included
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up_bn = nn.BatchNorm2d(8)
        self.dec = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        down = F.relu(self.down(skip))
        up = F.relu(self.up_bn(self.up(down, skip.size()) if self.sized else self.up(down)))
        return self.head(F.relu(self.dec(torch.cat([skip, up], 1))))


class ChunkNet(nn.Module):
    """A CSP block (YOLOv8's C2f): a layer's outputs are chunked in two along the channels,
    one half goes through a bottleneck (with a residual addition in the backbone's version),
    and both halves and its output are concatenated."""

    def __init__(self, *, num_classes: int = 4, shortcut: bool = False) -> None:
        super().__init__()
        self.shortcut = shortcut  # the backbone's bottlenecks add their input back
        self.cv1 = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.m = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
        self.cv2 = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        c = self.m(b) + b if self.shortcut else self.m(b)
        y = self.cv2(torch.cat([a, b, c], 1))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class GroupNormNet(nn.Module):
    """GroupNorm after convolutions: on a residual stream (two GroupNorms of different group
    sizes), without affine parameters, and over a concatenation of two layers' channels (as
    in a U-Net's decoder; each layer's channels make whole groups)."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.c1, self.g1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.c2, self.g2 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(8, 16)
        self.c3, self.g3 = nn.Conv2d(16, 24, 3, padding=1), nn.GroupNorm(6, 24, affine=False)
        self.a, self.b = nn.Conv2d(24, 8, 1), nn.Conv2d(24, 8, 1)
        self.g4 = nn.GroupNorm(4, 16)  # two groups of a's channels, two of b's
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.g1(self.c1(x)))
        x = F.relu(self.g2(self.c2(x)) + x)  # groups of 4 and of 2 on one stream: blocks of 4
        x = F.relu(self.g3(self.c3(x)))
        x = F.relu(self.g4(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(x.mean((2, 3)))


class BatchNormAct2d(nn.BatchNorm2d):
    """A BatchNorm that applies its activation in its own forward, through ``F.batch_norm`` on
    its own tensors, as timm's BatchNormAct2d does (it also counts its batches itself)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            self.training, self.momentum, self.eps,
        )  # fmt: skip
        return self.act(x)


class GroupNormAct(nn.GroupNorm):
    """A GroupNorm with its activation, through ``F.group_norm`` (timm's GroupNormAct)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class Conv2dSame(nn.Conv2d):
    """Pads itself, then calls ``F.conv2d`` on its own tensors (timm's Conv2dSame, simplified)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class LinearF(nn.Linear):
    """Calls ``F.linear`` on its own tensors (timm's Linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class NormActNet(nn.Module):
    """Layers that call their functional form on their own tensors (norms with their activation
    on a residual stream, a self-padding convolution, a linear layer), and a functional dropout
    that follows the model's mode."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 8, 3, padding=1), BatchNormAct2d(8)
        self.c2, self.n2 = Conv2dSame(8, 8, 3), BatchNormAct2d(8)
        self.c3, self.n3 = nn.Conv2d(8, 12, 3, padding=1), GroupNormAct(4, 12)
        self.fc1, self.fc = LinearF(12, 16), nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.n1(self.c1(x))
        x = self.n2(self.c2(x)) + x
        x = self.n3(self.c3(x))
        x = F.dropout(x, 0.5, self.training)
        return self.fc(F.relu(self.fc1(x.mean((2, 3)))))


class GhostNet(nn.Module):
    """GhostNet's module: a convolution and a cheap depthwise one on its output, concatenated
    and cut to the width asked, ``out[:, :self.out_chs]``, here all of it (as in GhostNet when
    the width is even)."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.out_chs = 8
        self.primary = nn.Conv2d(3, 4, 1)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.primary(x))
        out = torch.cat([a, torch.relu(self.cheap(a))], 1)
        return self.head(out[:, : self.out_chs]).mean((2, 3))


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """timm's ``drop_path``: whole samples dropped at random, in training only."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPathNet(nn.Module):
    """Residual branches with timm's stochastic depth (masks drawn with ``Tensor.bernoulli_``
    only under ``if self.training``, so only a training-mode trace has them) and a channel
    dropout drawn with ``torch.bernoulli``."""

    def __init__(self, *, num_classes: int = 5, drop_prob: float = 0.5) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = x + drop_path(F.relu(self.b1(self.c1(x))), self.drop_prob, self.training)
        x = F.relu(self.b2(self.c2(x)))
        if self.training:
            keep = torch.full_like(x[:, :, :1, :1], 1 - self.drop_prob)
            x = x * torch.bernoulli(keep) / (1 - self.drop_prob)
        return self.fc(x.mean((2, 3)))


class CRNN(nn.Module):
    """A convolutional recurrent net, as for text lines or spectrograms: the columns of a
    feature map are the steps of a bidirectional two-layer LSTM (its inputs: each channel's
    rows, flattened), and a GRU cell reads the same steps one at a time."""

    def __init__(self, *, num_classes: int = 5, steps: int = 8) -> None:
        super().__init__()
        self.steps = steps
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=(2, 1), padding=1)
        self.rnn = nn.LSTM(6 * 4, 10, num_layers=2, bidirectional=True, batch_first=True)
        self.cell = nn.GRUCell(6 * 4, 7)
        self.fc = nn.Linear(2 * 10 + 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.bn1(self.conv1(x)))))  # (N, 6, 4, steps)
        seq = x.permute(0, 3, 1, 2).flatten(2)  # (N, steps, 6 * 4)
        out, _ = self.rnn(seq)
        h = seq.new_zeros(seq.shape[0], self.cell.hidden_size)
        for t in range(self.steps):
            h = self.cell(seq[:, t], h)
        return self.fc(torch.cat([out[:, -1], h], 1))


class LayerNorm2d(nn.LayerNorm):
    """A LayerNorm over the channels of an (N, C, H, W) map, written as torchvision's and
    timm's ConvNeXt write it: permute, ``F.layer_norm`` on its own tensors, permute back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtNet(nn.Module):
    """A ConvNeXt stage: a patchify stem with its LayerNorm2d, a block (depthwise conv,
    LayerNorm over channels-last features, inverted MLP, a layer scale) on the residual
    stream, a LayerNorm2d before the downsampling conv, and a head."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.down_norm, self.down = LayerNorm2d(8), nn.Conv2d(8, 12, 2, stride=2)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_norm(self.stem(x))
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        h = self.fc2(F.gelu(self.fc1(h))) * self.gamma
        x = x + h.permute(0, 3, 1, 2)
        x = self.down(self.down_norm(x))
        return self.head(x.mean((2, 3)))


class LayerNormStreamNet(nn.Module):
    """Two convolutions with a LayerNorm over the channels between them, and a head."""

    def __init__(self, *, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.a, self.norm = nn.Conv2d(in_channels, 8, 3, padding=1), nn.LayerNorm(8)
        self.b, self.fc = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(torch.relu(self.b(torch.relu(x))).mean((2, 3)))


class SubPixelNet(nn.Module):
    """Sub-pixel upsampling (ESPCN, EDSR): two convolutions' filters in blocks of 4, each
    folded by a PixelShuffle (module and functional) into one channel of a twice larger map,
    added together, under a batch norm and a depthwise convolution; then a PixelUnshuffle
    spreads each channel over 4 that a convolution reads, and an unshuffle-shuffle round trip
    gives a layer its channels back."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.up_a, self.up_b = nn.Conv2d(16, 8 * 4, 3, padding=1), nn.Conv2d(16, 8 * 4, 1)
        self.shuffle, self.unshuffle = nn.PixelShuffle(2), nn.PixelUnshuffle(2)
        self.bn2, self.dw = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = nn.Conv2d(8 * 4, 12, 3, padding=1)
        self.head = nn.Conv2d(12, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.c1(x)))
        y = self.shuffle(self.up_a(x)) + F.pixel_shuffle(self.up_b(x), 2)  # (N, 8, 2H, 2W)
        y = F.relu(self.dw(F.relu(self.bn2(y))))
        y = F.relu(self.c3(self.unshuffle(y)))  # (N, 12, H, W)
        y = F.pixel_shuffle(F.pixel_unshuffle(y, 2), 2)
        return self.head(y).mean((2, 3))


class PointwiseNet(nn.Module):
    """Element-wise maths written out in forward, each zero at zero: MetaFormer's StarReLU
    (``s * relu(x) ** 2``), GELU's tanh approximation by hand, ``-x``, ``abs``, an erf,
    ``x * rsqrt(x * x + 1)``, a sine and a power with a tensor exponent."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c3, self.c4 = nn.Conv2d(8, 12, 1), nn.Conv2d(12, 6, 1)
        self.scale = nn.Parameter(torch.tensor([0.8]))  # StarReLU's scalar scale
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale * F.relu(self.c1(x)) ** 2
        y = self.c2(x)
        y = 0.5 * y * (1 + torch.tanh(0.7978845608 * (y + 0.044715 * torch.pow(y, 3))))
        y = -abs(y) + torch.erf(y)
        z = self.c3(y)
        z = z * (z * z + 1).rsqrt() + torch.sin(z) + z.abs().pow(z.sign().abs() + 1)
        return self.fc(self.c4(z).mean((2, 3)))


class ReorderNet(nn.Module):
    """Channels moved and rearranged without mixing them: ``movedim`` around a channels-last
    linear layer, a spatial ``roll`` (Swin's shift) and ``flip``, two branches stacked and
    summed (SKNet), and a LayerNorm without weights over the spatial dimensions only."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.c1, self.pw = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 12)
        self.b1, self.b2 = nn.Conv2d(12, 8, 3, padding=1), nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = self.pw(torch.roll(x, 1, 3).movedim(1, -1)).movedim(-1, 1)
        y = torch.stack([self.b1(x), torch.flip(self.b2(x), (2,))], 1).sum(1)
        y = F.layer_norm(F.relu(y), (8, 8))
        return self.fc(y.mean((2, 3)))


class SelectiveKernelNet(nn.Module):
    """SKNet's selective kernel: two branches stacked, their sum squeezed into an attention
    whose layer gives one weight per branch and channel, viewed as (branches, channels) and
    normalised over the branches; then a ShuffleNet channel shuffle of two layers' channels
    (viewed as 2 groups, transposed, flattened back)."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(8, 12, 3, padding=1), nn.Conv2d(8, 12, 1)
        self.reduce, self.select = nn.Conv2d(12, 6, 1), nn.Conv2d(6, 2 * 12, 1)
        self.left, self.right = nn.Conv2d(12, 8, 1), nn.Conv2d(12, 8, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        paths = torch.stack([F.relu(self.b1(x)), F.relu(self.b2(x))], 1)  # (N, 2, C, H, W)
        attn = self.select(F.relu(self.reduce(paths.sum(1).mean((2, 3), keepdim=True))))
        n, c, h, w = attn.shape
        attn = torch.softmax(attn.view(n, 2, c // 2, h, w), dim=1)
        x = (paths * attn).sum(1)
        y = torch.cat([self.left(x), self.right(x)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(F.relu(y).mean((2, 3)))


class SplitAttentionNet(nn.Module):
    """ResNeSt's split attention (timm's ``SplitAttn``, radix 2): a convolution grouped by
    radix makes both splits at once, viewed as (radix, channels) with a width computed from
    its count and summed into an attention whose last layer gives one weight per split and
    channel; a radix softmax over (cardinality 1, radix, channels), transposed and flattened
    back with the splits first, weighs the splits."""

    def __init__(self, *, num_classes: int = 5, groups: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.conv = nn.Conv2d(12, 2 * 12, 3, padding=1, groups=groups)
        self.fc1, self.fc2 = nn.Conv2d(12, 6, 1), nn.Conv2d(6, 2 * 12, 1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(F.relu(self.stem(x))))
        b, rc, h, w = x.shape
        x = x.reshape((b, 2, rc // 2, h, w))
        attn = self.fc2(F.relu(self.fc1(x.sum(dim=1).mean((2, 3), keepdim=True))))
        attn = F.softmax(attn.view(b, 1, 2, -1).transpose(1, 2), dim=1).reshape(b, -1)
        out = (x * attn.view(b, -1, 1, 1).reshape((b, 2, rc // 2, 1, 1))).sum(dim=1)
        return self.fc(out.mean((2, 3)))


class MixedConv(nn.Module):
    """timm's MixedConv2d: the channels split at sizes the module keeps (``self.splits``), a
    depthwise convolution of its own kernel size on each part, the parts concatenated."""

    def __init__(self, splits: list[int]) -> None:
        super().__init__()
        self.splits = splits
        self.convs = nn.ModuleList(
            nn.Conv2d(s, s, 2 * i + 1, padding=i, groups=s) for i, s in enumerate(splits)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], 1)


class PartialConv(nn.Module):
    """FasterNet's partial convolution: a convolution on the first part of a residual
    stream, the rest passed on, at sizes kept as two counts (``[self.dim_conv3,
    self.dim_untouched]``)."""

    def __init__(self, dim: int, part: int) -> None:
        super().__init__()
        self.dim_conv3, self.dim_untouched = part, dim - part
        self.conv = nn.Conv2d(part, part, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.conv(x1), x2), 1)


class SplitSizesNet(nn.Module):
    """Splits at sizes that modules keep: MixNet's mixed depthwise convolution, FasterNet's
    partial convolution in a residual block, and YOLOv8's C2f (``split((self.c, self.c))``,
    one count for two parts)."""

    def __init__(self, *, num_classes: int = 5) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 12, 1)
        self.bn = nn.BatchNorm2d(12)
        self.mix = MixedConv([8, 4])
        self.bn2 = nn.BatchNorm2d(12)
        self.partial = PartialConv(12, 4)
        self.mlp = nn.Conv2d(12, 12, 1)
        self.c = 6
        self.m = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(18, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.pw(x)))
        y = F.relu(self.bn2(self.mix(y)))
        y = y + self.mlp(F.relu(self.partial(y)))
        a, b = y.split((self.c, self.c), 1)
        y = torch.cat([a, b, F.relu(self.m(b))], 1)
        return self.fc(y.mean((2, 3)))
