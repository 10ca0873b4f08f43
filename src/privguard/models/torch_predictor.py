"""PyTorch module -> :class:`~privguard.oracle.Predictor`.

Probabilities are computed from the logits in float64, so confident predictions keep their
resolution (a float32 softmax rounds p_y to exactly 1.0 once the margin passes ~17, and then
every confident record ties at zero loss).
"""

from __future__ import annotations

import numpy as np
import torch

from privguard.models.threads import single_thread

BATCH = 4096


class TorchPredictor:
    def __init__(self, module: torch.nn.Module, input_shape, n_classes: int) -> None:
        self.module = module.eval()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_classes = int(n_classes)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        out = []
        with single_thread(), torch.no_grad():
            for i in range(0, len(x), BATCH):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + BATCH], dtype=np.float32))
                out.append(self.module(xb).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.predict_logits(x)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d cross_entropy(f(x), y) / dx, summed over the batch (per-record gradients)."""
        with single_thread():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(
                self.module(xt), torch.from_numpy(y), reduction="sum"
            )
            (g,) = torch.autograd.grad(loss, xt)
        return g.numpy()
