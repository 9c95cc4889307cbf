"""The FID Inception v3: torchvision's Inception v3 with the pooling of the TF graph inception-2015-12-05.

The network every published FID uses is the TensorFlow graph of 2015-12-05. It matches torchvision's
Inception v3 layer for layer (1008 classes, no aux head) except in four pooling branches:
Mixed_5b-d, Mixed_6b-e and Mixed_7b average without counting the zero padding (TF's avg_pool),
and Mixed_7c pools with a 3x3 stride-1 max pool. Parameter names are torchvision's, so the ported
weights file (pt_inception-2015-12-05-6726825d.pth, 472 tensors) loads strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

NUM_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes + 8 unused
FEATURE_DIM = 2048  # global average pool after Mixed_7c ("pool_3" in the TF graph)


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average that divides by the number of real (unpadded) pixels, as TF does."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 max pool: what the TF graph has in Mixed_7c's pooling branch."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _TFPooling:
    """Mixin for torchvision's Inception blocks: same layers, pooling branch as in the TF graph.

    `chains` lists the non-pooling branches in output order, each a chain of layer names applied in
    turn; a tuple of names inside a chain fans out and concatenates on channels (InceptionE's splits).
    The pooling branch comes last, as in torchvision's blocks.
    """

    chains: tuple = ()
    pool = staticmethod(_avg_pool_no_pad)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self._chain(x, chain) for chain in self.chains] + [self.branch_pool(self.pool(x))]

    def _chain(self, x: torch.Tensor, chain: tuple) -> torch.Tensor:
        for step in chain:
            if isinstance(step, tuple):
                x = torch.cat([getattr(self, name)(x) for name in step], 1)
            else:
                x = getattr(self, step)(x)
        return x


class TFInceptionA(_TFPooling, tv.InceptionA):
    """Mixed_5b-d."""

    chains = (("branch1x1",), ("branch5x5_1", "branch5x5_2"),
              ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"))


class TFInceptionC(_TFPooling, tv.InceptionC):
    """Mixed_6b-e."""

    chains = (("branch1x1",), ("branch7x7_1", "branch7x7_2", "branch7x7_3"),
              ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"))


class TFInceptionE(_TFPooling, tv.InceptionE):
    """Mixed_7b."""

    chains = (("branch1x1",), ("branch3x3_1", ("branch3x3_2a", "branch3x3_2b")),
              ("branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")))


class TFInceptionEMax(TFInceptionE):
    """Mixed_7c: max pooling in the pooling branch (a quirk of the TF graph, kept for comparability)."""

    pool = staticmethod(_max_pool)


# Order of the layers from the input to Mixed_7c, by torchvision's attribute names.
_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class FIDInceptionV3(tv.Inception3):
    """Inception v3 as in the FID graph; input (B,3,299,299) in [-1,1] -> (features (B,2048), logits (B,1008))."""

    def __init__(self):
        blocks = [tv.BasicConv2d, TFInceptionA, tv.InceptionB, TFInceptionC, tv.InceptionD, TFInceptionE,
                  tv.InceptionAux]
        super().__init__(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False,
                         inception_blocks=blocks, init_weights=False)
        self.Mixed_7c = TFInceptionEMax(2048)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d global average pool after Mixed_7c."""
        for name in _TRUNK:
            x = getattr(self, name)(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits of `fc` with its bias)."""
        f = self.features(x)
        return f, self.fc(f)

    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """The 472 tensors of the standard weights file: the state dict without BN batch counters."""
        return {k: v for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}
