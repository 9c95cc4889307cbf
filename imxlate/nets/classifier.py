"""A small image classifier network, the one `imxlate train-classifier` trains: its file, training and use are
`imxlate.classifier` (nets import no persistence)."""
from __future__ import annotations

import torch.nn as nn


class Classifier(nn.Module):
    """(B,3,H,W) in [-1,1] -> (B, n_classes) logits; `features` is `blocks` conv blocks, each halving H and W."""

    def __init__(self, n_classes: int, width: int = 32, blocks: int = 3):
        super().__init__()
        layers, c_in = [], 3
        for i in range(blocks):
            c = width * 2**i
            layers.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
                nn.MaxPool2d(2)))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)
        self.config = {"n_classes": n_classes, "width": width, "blocks": blocks}

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))  # global average pool: any input size works


