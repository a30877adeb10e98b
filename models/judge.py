"""GlyphJudge: a small CNN digit classifier used to score generated glyphs, plus KID.

Judge accuracy on generated samples measures class fidelity (does class-conditional sampling
draw the requested digit?); KID on the judge's penultimate features measures distribution
match, as FID/KID do with Inception features.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class GlyphJudge(nn.Module):
    """32x32 RGB digit classifier: a stride-2 stem to 16x16, 4 conv layers (16->8 px), global average pool, 2 linears."""

    def __init__(self, width: int = 16, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        w = width
        self.body = nn.Sequential(_conv(3, w, 2), _conv(w, 2 * w), _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w),
                                  _conv(4 * w, 4 * w))
        self.fc = nn.Linear(4 * w, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,32,32] in [0,1] -> penultimate features [B,feature_dim]."""
        h = self.body(images * 2 - 1).mean((2, 3))  # (B, 4w)
        return F.relu(self.fc(h))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,32,32] in [0,1] -> logits [B,num_classes]."""
        return self.head(self.features(images))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "GlyphJudge":
        """Build a judge whose sizes are read from the state dict's shapes, and load it (eval mode, fp32)."""
        if "fc.weight" not in sd or "head.weight" not in sd:
            raise ValueError(f"expected a GlyphJudge state dict with fc.weight and head.weight, got keys {sorted(sd)[:6]}...")
        judge = cls(width=sd["body.0.0.weight"].shape[0], feature_dim=sd["fc.weight"].shape[0],
                    num_classes=sd["head.weight"].shape[0])
        judge.load_state_dict({k: v.float() for k, v in sd.items()})
        return judge.eval()


@torch.no_grad()
def judge_accuracy(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of images [N,3,32,32] in [0,1] whose argmax class equals labels [N]."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"expected as many labels as images, got {labels.shape[0]} vs {images.shape[0]}")
    preds = torch.cat([judge(images[i:i + batch_size]).argmax(-1) for i in range(0, images.shape[0], batch_size)])
    return (preds == labels.to(preds.device)).float().mean().item()


def kid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"), one subset.

    Unbiased MMD^2 between features_a [N,d] and features_b [M,d] with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3. Expected value 0 when both come from the same distribution.
    """
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"expected two [N,d] feature matrices with equal d, got {tuple(features_a.shape)} and {tuple(features_b.shape)}")
    a, b = features_a.double(), features_b.double()
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {n} and {m}")
    k_aa, k_bb, k_ab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    mmd2 = ((k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1)) + (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
            - 2 * k_ab.mean())
    return mmd2.item()
