"""Test reference: the authors' PyTorch AP3D / non-local / inflated ResNet-50, ported verbatim.

From github.com/guxinqian/AP3D at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f:
``models/AP3D.py`` (APM, C2D, I3D, P3DC, APP3DC), ``models/NonLocal.py`` (NonLocalBlockND,
NonLocalBlock3D), ``models/inflate.py`` (inflate_conv, inflate_batch_norm, inflate_pool) and
``models/ResNet.py`` (Bottleneck3D, ResNet503D). Only what the tests need is kept; the forward
code is unchanged except for comments. Two changes, both outside the math: ``ResNet503D`` takes
the 2-D ResNet to inflate as an argument (the original downloads torchvision's ImageNet
ResNet-50; torchvision is not installed here, so tests pass bench/parity_torch.py's
torchvision-layout ResNet), and ``features()`` returns the layer4 maps before the pooling head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- models/AP3D.py
class APM(nn.Module):
    def __init__(self, in_channels, out_channels, time_dim=3, temperature=4, contrastive_att=True):
        super(APM, self).__init__()

        self.time_dim = time_dim
        self.temperature = temperature
        self.contrastive_att = contrastive_att

        padding = (0, 0, 0, 0, (time_dim - 1) // 2, (time_dim - 1) // 2)
        self.padding = nn.ConstantPad3d(padding, value=0)

        self.semantic_mapping = nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False)
        if self.contrastive_att:
            self.x_mapping = nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False)
            self.n_mapping = nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False)
            self.contrastive_att_net = nn.Sequential(
                nn.Conv3d(out_channels, 1, kernel_size=1, bias=False), nn.Sigmoid()
            )

    def forward(self, x):
        b, c, t, h, w = x.size()
        N = self.time_dim

        neighbor_time_index = (
            torch.cat(
                [(torch.arange(0, t) + i).unsqueeze(0) for i in range(N) if i != N // 2], dim=0
            )
            .t()
            .flatten()
            .long()
        )

        # feature map registration
        semantic = self.semantic_mapping(x)  # (b, c/16, t, h, w)
        x_norm = F.normalize(semantic, p=2, dim=1)  # (b, c/16, t, h, w)
        x_norm_padding = self.padding(x_norm)  # (b, c/16, t+2, h, w)
        x_norm_expand = (
            x_norm.unsqueeze(3)
            .expand(-1, -1, -1, N - 1, -1, -1)
            .permute(0, 2, 3, 4, 5, 1)
            .contiguous()
            .view(-1, h * w, c // 16)
        )  # (b*t*2, h*w, c/16)
        neighbor_norm = (
            x_norm_padding[:, :, neighbor_time_index, :, :]
            .permute(0, 2, 1, 3, 4)
            .contiguous()
            .view(-1, c // 16, h * w)
        )  # (b*t*2, c/16, h*w)

        similarity = torch.matmul(x_norm_expand, neighbor_norm) * self.temperature
        similarity = F.softmax(similarity, dim=-1)  # (b*t*2, h*w, h*w)

        x_padding = self.padding(x)
        neighbor = (
            x_padding[:, :, neighbor_time_index, :, :]
            .permute(0, 2, 3, 4, 1)
            .contiguous()
            .view(-1, h * w, c)
        )
        neighbor_new = (
            torch.matmul(similarity, neighbor).view(b, t * (N - 1), h, w, c).permute(0, 4, 1, 2, 3)
        )  # (b, c, t*2, h, w)

        # contrastive attention
        if self.contrastive_att:
            x_att = self.x_mapping(
                x.unsqueeze(3)
                .expand(-1, -1, -1, N - 1, -1, -1)
                .contiguous()
                .view(b, c, (N - 1) * t, h, w)
                .detach()
            )
            n_att = self.n_mapping(neighbor_new.detach())
            contrastive_att = self.contrastive_att_net(x_att * n_att)
            neighbor_new = neighbor_new * contrastive_att

        # integrating feature maps
        x_offset = torch.zeros([b, c, N * t, h, w], dtype=x.data.dtype, device=x.device.type)
        x_index = torch.tensor([i for i in range(t * N) if i % N == N // 2])
        neighbor_index = torch.tensor([i for i in range(t * N) if i % N != N // 2])
        x_offset[:, :, x_index, :, :] += x
        x_offset[:, :, neighbor_index, :, :] += neighbor_new

        return x_offset


class C2D(nn.Module):
    def __init__(self, conv2d, **kwargs):
        super(C2D, self).__init__()

        # conv3d kernel
        kernel_dim = (1, conv2d.kernel_size[0], conv2d.kernel_size[1])
        stride = (1, conv2d.stride[0], conv2d.stride[0])
        padding = (0, conv2d.padding[0], conv2d.padding[1])
        self.conv3d = nn.Conv3d(conv2d.in_channels, conv2d.out_channels, kernel_size=kernel_dim,
                                padding=padding, stride=stride, bias=conv2d.bias)  # fmt: skip

        # init the parameters of conv3d
        weight_2d = conv2d.weight.data
        weight_3d = torch.zeros(*weight_2d.shape)
        weight_3d = weight_3d.unsqueeze(2)
        weight_3d[:, :, 0, :, :] = weight_2d
        self.conv3d.weight = nn.Parameter(weight_3d)
        self.conv3d.bias = conv2d.bias

    def forward(self, x):
        out = self.conv3d(x)

        return out


class I3D(nn.Module):
    def __init__(self, conv2d, time_dim=3, time_stride=1, **kwargs):
        super(I3D, self).__init__()

        # conv3d kernel
        kernel_dim = (time_dim, conv2d.kernel_size[0], conv2d.kernel_size[1])
        stride = (time_stride, conv2d.stride[0], conv2d.stride[0])
        padding = (time_dim // 2, conv2d.padding[0], conv2d.padding[1])
        self.conv3d = nn.Conv3d(conv2d.in_channels, conv2d.out_channels, kernel_size=kernel_dim,
                                padding=padding, stride=stride, bias=conv2d.bias)  # fmt: skip

        # init the parameters of conv3d
        weight_2d = conv2d.weight.data
        weight_3d = torch.zeros(*weight_2d.shape)
        weight_3d = weight_3d.unsqueeze(2).repeat(1, 1, time_dim, 1, 1)
        middle_idx = time_dim // 2
        weight_3d[:, :, middle_idx, :, :] = weight_2d
        self.conv3d.weight = nn.Parameter(weight_3d)
        self.conv3d.bias = conv2d.bias

    def forward(self, x):
        out = self.conv3d(x)

        return out


class P3DC(nn.Module):
    def __init__(self, conv2d, time_dim=3, time_stride=1, **kwargs):
        super(P3DC, self).__init__()

        # spatial conv3d kernel
        kernel_dim = (1, conv2d.kernel_size[0], conv2d.kernel_size[1])
        stride = (1, conv2d.stride[0], conv2d.stride[0])
        padding = (0, conv2d.padding[0], conv2d.padding[1])
        self.spatial_conv3d = nn.Conv3d(conv2d.in_channels, conv2d.out_channels,
                                        kernel_size=kernel_dim, padding=padding,
                                        stride=stride, bias=conv2d.bias)  # fmt: skip

        # init the parameters of spatial_conv3d
        weight_2d = conv2d.weight.data
        weight_3d = torch.zeros(*weight_2d.shape)
        weight_3d = weight_3d.unsqueeze(2)
        weight_3d[:, :, 0, :, :] = weight_2d
        self.spatial_conv3d.weight = nn.Parameter(weight_3d)
        self.spatial_conv3d.bias = conv2d.bias

        # temporal conv3d kernel
        kernel_dim = (time_dim, 1, 1)
        stride = (time_stride, 1, 1)
        padding = (time_dim // 2, 0, 0)
        self.temporal_conv3d = nn.Conv3d(conv2d.out_channels, conv2d.out_channels,
                                         kernel_size=kernel_dim, padding=padding,
                                         stride=stride, bias=False)  # fmt: skip

        # init the parameters of temporal_conv3d
        nn.init.constant_(self.temporal_conv3d.weight, 0)

    def forward(self, x):
        out = self.spatial_conv3d(x)
        residual = self.temporal_conv3d(out)
        out = out + residual

        return out


class APP3DC(nn.Module):
    def __init__(self, conv2d, time_dim=3, time_stride=1, temperature=4, contrastive_att=True):
        super(APP3DC, self).__init__()

        self.APM = APM(conv2d.out_channels, conv2d.out_channels // 16, time_dim=time_dim,
                       temperature=temperature, contrastive_att=contrastive_att)  # fmt: skip

        # spatial conv3d kernel
        kernel_dim = (1, conv2d.kernel_size[0], conv2d.kernel_size[1])
        stride = (1, conv2d.stride[0], conv2d.stride[0])
        padding = (0, conv2d.padding[0], conv2d.padding[1])
        self.spatial_conv3d = nn.Conv3d(conv2d.in_channels, conv2d.out_channels,
                                        kernel_size=kernel_dim, padding=padding,
                                        stride=stride, bias=conv2d.bias)  # fmt: skip

        # init the parameters of spatial_conv3d
        weight_2d = conv2d.weight.data
        weight_3d = torch.zeros(*weight_2d.shape)
        weight_3d = weight_3d.unsqueeze(2)
        weight_3d[:, :, 0, :, :] = weight_2d
        self.spatial_conv3d.weight = nn.Parameter(weight_3d)
        self.spatial_conv3d.bias = conv2d.bias

        # temporal conv3d kernel
        kernel_dim = (time_dim, 1, 1)
        stride = (time_stride * time_dim, 1, 1)
        padding = (0, 0, 0)
        self.temporal_conv3d = nn.Conv3d(conv2d.out_channels, conv2d.out_channels,
                                         kernel_size=kernel_dim, padding=padding,
                                         stride=stride, bias=False)  # fmt: skip

        # init the parameters of temporal_conv3d
        nn.init.constant_(self.temporal_conv3d.weight, 0)

    def forward(self, x):
        out = self.spatial_conv3d(x)
        residual = self.temporal_conv3d(self.APM(out))
        out = out + residual

        return out


# ---------------------------------------------------------------- models/NonLocal.py
class NonLocalBlockND(nn.Module):
    def __init__(self, in_channels, inter_channels=None, dimension=3, sub_sample=True,
                 bn_layer=True):  # fmt: skip
        super(NonLocalBlockND, self).__init__()

        assert dimension in [1, 2, 3]

        self.dimension = dimension
        self.sub_sample = sub_sample
        self.in_channels = in_channels
        self.inter_channels = inter_channels

        if self.inter_channels is None:
            self.inter_channels = in_channels // 2
            if self.inter_channels == 0:
                self.inter_channels = 1

        assert dimension == 3  # only the 3-D case is ported
        conv_nd = nn.Conv3d
        max_pool = nn.MaxPool3d
        bn = nn.BatchNorm3d

        self.g = conv_nd(self.in_channels, self.inter_channels,
                         kernel_size=1, stride=1, padding=0, bias=True)  # fmt: skip
        self.theta = conv_nd(self.in_channels, self.inter_channels,
                             kernel_size=1, stride=1, padding=0, bias=True)  # fmt: skip
        self.phi = conv_nd(self.in_channels, self.inter_channels,
                           kernel_size=1, stride=1, padding=0, bias=True)  # fmt: skip
        if sub_sample:
            self.g = nn.Sequential(self.g, max_pool((1, 2, 2)))
            self.phi = nn.Sequential(self.phi, max_pool((1, 2, 2)))

        if bn_layer:
            self.W = nn.Sequential(
                conv_nd(
                    self.inter_channels,
                    self.in_channels,
                    kernel_size=1,
                    stride=1,
                    padding=0,
                    bias=True,
                ),  # fmt: skip
                bn(self.in_channels),
            )
        else:
            self.W = conv_nd(self.inter_channels, self.in_channels,
                             kernel_size=1, stride=1, padding=0, bias=True)  # fmt: skip

        # init
        for m in self.modules():
            if isinstance(m, conv_nd):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, bn):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

        if bn_layer:
            nn.init.constant_(self.W[1].weight.data, 0.0)
            nn.init.constant_(self.W[1].bias.data, 0.0)
        else:
            nn.init.constant_(self.W.weight.data, 0.0)
            nn.init.constant_(self.W.bias.data, 0.0)

    def forward(self, x):
        """
        :param x: (b, c, t, h, w)
        :return:
        """

        batch_size = x.size(0)

        g_x = self.g(x).view(batch_size, self.inter_channels, -1)
        g_x = g_x.permute(0, 2, 1)

        theta_x = self.theta(x).view(batch_size, self.inter_channels, -1)
        theta_x = theta_x.permute(0, 2, 1)
        phi_x = self.phi(x).view(batch_size, self.inter_channels, -1)
        f = torch.matmul(theta_x, phi_x)
        f = F.softmax(f, dim=-1)

        y = torch.matmul(f, g_x)
        y = y.permute(0, 2, 1).contiguous()
        y = y.view(batch_size, self.inter_channels, *x.size()[2:])
        y = self.W(y)
        z = y + x

        return z


class NonLocalBlock3D(NonLocalBlockND):
    def __init__(self, in_channels, inter_channels=None, sub_sample=True, bn_layer=True):
        super(NonLocalBlock3D, self).__init__(in_channels, inter_channels=inter_channels,
                                              dimension=3, sub_sample=sub_sample,
                                              bn_layer=bn_layer)  # fmt: skip


# ---------------------------------------------------------------- models/inflate.py
def inflate_conv(conv2d, time_dim=1, time_padding=0, time_stride=1, time_dilation=1,
                 center=False):  # fmt: skip
    kernel_dim = (time_dim, conv2d.kernel_size[0], conv2d.kernel_size[1])
    padding = (time_padding, conv2d.padding[0], conv2d.padding[1])
    stride = (time_stride, conv2d.stride[0], conv2d.stride[0])
    dilation = (time_dilation, conv2d.dilation[0], conv2d.dilation[1])
    conv3d = nn.Conv3d(conv2d.in_channels, conv2d.out_channels, kernel_dim, padding=padding,
                       dilation=dilation, stride=stride)  # fmt: skip
    # Repeat filter time_dim times along time dimension
    weight_2d = conv2d.weight.data
    if center:
        weight_3d = torch.zeros(*weight_2d.shape)
        weight_3d = weight_3d.unsqueeze(2).repeat(1, 1, time_dim, 1, 1)
        middle_idx = time_dim // 2
        weight_3d[:, :, middle_idx, :, :] = weight_2d
    else:
        weight_3d = weight_2d.unsqueeze(2).repeat(1, 1, time_dim, 1, 1)
        weight_3d = weight_3d / time_dim

    # Assign new params
    conv3d.weight = nn.Parameter(weight_3d)
    conv3d.bias = conv2d.bias
    return conv3d


def inflate_batch_norm(batch2d):
    batch3d = nn.BatchNorm3d(batch2d.num_features)
    # retrieve 3d _check_input_dim function
    batch2d._check_input_dim = batch3d._check_input_dim
    return batch2d


def inflate_pool(pool2d, time_dim=1, time_padding=0, time_stride=None, time_dilation=1):
    kernel_dim = (time_dim, pool2d.kernel_size, pool2d.kernel_size)
    padding = (time_padding, pool2d.padding, pool2d.padding)
    if time_stride is None:
        time_stride = time_dim
    stride = (time_stride, pool2d.stride, pool2d.stride)
    assert isinstance(pool2d, nn.MaxPool2d)
    dilation = (time_dilation, pool2d.dilation, pool2d.dilation)
    return nn.MaxPool3d(kernel_dim, padding=padding, dilation=dilation, stride=stride,
                        ceil_mode=pool2d.ceil_mode)  # fmt: skip


# ---------------------------------------------------------------- models/ResNet.py
class Bottleneck3D(nn.Module):
    def __init__(
        self, bottleneck2d, block, inflate_time=False, temperature=4, contrastive_att=True
    ):
        super(Bottleneck3D, self).__init__()

        self.conv1 = inflate_conv(bottleneck2d.conv1, time_dim=1)
        self.bn1 = inflate_batch_norm(bottleneck2d.bn1)
        if inflate_time:
            self.conv2 = block(bottleneck2d.conv2, temperature=temperature,
                               contrastive_att=contrastive_att)  # fmt: skip
        else:
            self.conv2 = inflate_conv(bottleneck2d.conv2, time_dim=1)
        self.bn2 = inflate_batch_norm(bottleneck2d.bn2)
        self.conv3 = inflate_conv(bottleneck2d.conv3, time_dim=1)
        self.bn3 = inflate_batch_norm(bottleneck2d.bn3)
        self.relu = nn.ReLU(inplace=True)

        if bottleneck2d.downsample is not None:
            self.downsample = self._inflate_downsample(bottleneck2d.downsample)
        else:
            self.downsample = None

    def _inflate_downsample(self, downsample2d, time_stride=1):
        downsample3d = nn.Sequential(
            inflate_conv(downsample2d[0], time_dim=1, time_stride=time_stride),
            inflate_batch_norm(downsample2d[1]),
        )
        return downsample3d

    def forward(self, x):
        residual = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            residual = self.downsample(x)

        out += residual
        out = self.relu(out)

        return out


class ResNet503D(nn.Module):
    """``resnet2d``: the 2-D ResNet-50 to inflate (the original: torchvision's ImageNet one)."""

    def __init__(self, resnet2d, block, c3d_idx, nl_idx, temperature=4, contrastive_att=True):
        super(ResNet503D, self).__init__()

        self.block = block
        self.temperature = temperature
        self.contrastive_att = contrastive_att

        resnet2d.layer4[0].conv2.stride = (1, 1)
        resnet2d.layer4[0].downsample[0].stride = (1, 1)

        self.conv1 = inflate_conv(resnet2d.conv1, time_dim=1)
        self.bn1 = inflate_batch_norm(resnet2d.bn1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = inflate_pool(resnet2d.maxpool, time_dim=1)

        self.layer1 = self._inflate_reslayer(
            resnet2d.layer1, c3d_idx=c3d_idx[0], nonlocal_idx=nl_idx[0], nonlocal_channels=256
        )
        self.layer2 = self._inflate_reslayer(
            resnet2d.layer2, c3d_idx=c3d_idx[1], nonlocal_idx=nl_idx[1], nonlocal_channels=512
        )
        self.layer3 = self._inflate_reslayer(
            resnet2d.layer3, c3d_idx=c3d_idx[2], nonlocal_idx=nl_idx[2], nonlocal_channels=1024
        )
        self.layer4 = self._inflate_reslayer(resnet2d.layer4, c3d_idx=c3d_idx[3],
                                             nonlocal_idx=nl_idx[3],
                                             nonlocal_channels=2048)  # fmt: skip

    def _inflate_reslayer(self, reslayer2d, c3d_idx, nonlocal_idx=(), nonlocal_channels=0):
        reslayers3d = []
        for i, layer2d in enumerate(reslayer2d):
            if i not in c3d_idx:
                layer3d = Bottleneck3D(layer2d, C2D, inflate_time=False)
            else:
                layer3d = Bottleneck3D(layer2d, self.block, inflate_time=True,
                                       temperature=self.temperature,
                                       contrastive_att=self.contrastive_att)  # fmt: skip
            reslayers3d.append(layer3d)

            if i in nonlocal_idx:
                non_local_block = NonLocalBlock3D(nonlocal_channels, sub_sample=True)
                reslayers3d.append(non_local_block)

        return nn.Sequential(*reslayers3d)

    def features(self, x):
        """x [b, 3, t, h, w] -> the layer4 maps [b, 2048, t, h/16, w/16]."""
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def ap3d_resnet50(resnet2d):
    """AP3DResNet50 (ResNet.py): APP3DC in blocks 2.0, 2.2, 3.0, 3.2, 3.4."""
    return ResNet503D(resnet2d, APP3DC, [[], [0, 2], [0, 2, 4], []], [[], [], [], []])


def ap3d_nl_resnet50(resnet2d):
    """AP3DNLResNet50 (ResNet.py): AP3DResNet50 plus non-local blocks after 2.1, 2.3, 3.1, 3.3,
    3.5."""
    return ResNet503D(resnet2d, APP3DC, [[], [0, 2], [0, 2, 4], []], [[], [1, 3], [1, 3, 5], []])
