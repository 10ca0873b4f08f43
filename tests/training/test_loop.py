"""The one training loop: seeded batches, early stopping, and the package's import boundary."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import privguard.training
from privguard.data import load_dataset
from privguard.errors import ConfigError
from privguard.training.dp import make_private, quiet_opacus
from privguard.training.loop import ShuffledBatches, fit


def test_shuffled_batches_cover_every_record_once_per_epoch_in_a_seeded_order():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    a = ShuffledBatches(x, y, 4, torch.Generator().manual_seed(3))
    b = ShuffledBatches(x, y, 4, torch.Generator().manual_seed(3))
    first = [yb.tolist() for _, yb in a]
    assert [len(batch) for batch in first] == [4, 4, 2] and len(a) == 3
    assert sorted(sum(first, [])) == list(range(10))
    assert first == [yb.tolist() for _, yb in b]  # same seed, same order
    assert first != [yb.tolist() for _, yb in a]  # a new order the next epoch


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    """A real logistic regression on digits; the validation losses are scripted so that the
    third epoch is the best: the run stops two epochs later with the third epoch's weights."""
    ds = load_dataset("digits")
    x, y = torch.from_numpy(ds.x[:300].reshape(300, -1)), torch.from_numpy(ds.y[:300])
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = iter([3.0, 2.0, 1.0, 1.5, 1.2, 0.5, 0.4])
    snapshots = []

    def validation(m):
        assert not m.training and not torch.is_grad_enabled()
        snapshots.append(m.weight.detach().clone())
        return next(losses)

    seen = []
    result = fit(
        model,
        opt,
        ShuffledBatches(x, y, 64, torch.Generator().manual_seed(0)),
        lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        epochs=7,
        validation=validation,
        patience=2,
        progress=lambda label, done, total: seen.append((label, done, total)),
    )
    assert result.epochs_run == 5 and result.stopped_early
    assert result.best_validation_loss == 1.0 and result.batches == 5 * 5
    assert torch.equal(model.weight, snapshots[2]) and not torch.equal(model.weight, snapshots[4])
    assert seen == [("training", e, 7) for e in range(1, 6)]
    assert result.log() == {"epochs_run": 5, "stopped_early": True, "best_validation_loss": 1.0}
    assert np.isfinite(result.final_train_loss) and result.final_train_loss < np.log(10)


def test_without_validation_every_epoch_runs():
    x, y = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 2
    model = nn.Linear(3, 2)
    result = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        ShuffledBatches(x, y, 8, torch.Generator().manual_seed(0)),
        lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        epochs=4,
    )
    assert result.epochs_run == 4 and not result.stopped_early and result.batches == 12
    assert result.best_validation_loss is None and "best_validation_loss" not in result.log()


def test_make_private_checks_delta_against_the_records_and_accounts_every_step():
    data = torch.utils.data.TensorDataset(torch.randn(50, 4), torch.arange(50) % 2)
    loader = torch.utils.data.DataLoader(data, batch_size=10)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"1/n = 0\.02 for the 50 training records"):
        make_private(model, opt, loader, epsilon=1.0, delta=0.05, epochs=2)
    with pytest.raises(ConfigError, match="positive epsilon"):
        make_private(model, opt, loader, epsilon=0.0, delta=None, epochs=2)
    with quiet_opacus():
        private = make_private(
            model, opt, loader, epsilon=3.0, delta=None, epochs=2,
            criterion=nn.CrossEntropyLoss(), noise_seed=0,
        )  # fmt: skip
        result = fit(
            private.module,
            private.optimizer,
            private.batches,
            lambda m, b: private.criterion(m(b[0]), b[1]),
            epochs=2,
            weights=private.inner,
        )
        spent = private.spent()
    assert result.batches == spent.steps == spent.planned_steps == 2 * 5
    assert spent.delta == pytest.approx(1 / 500) and 2.9 <= spent.epsilon <= 3.0
    assert spent.sample_rate == pytest.approx(0.2) and spent.unit == "record"
    assert private.release() is model
    assert not model._forward_hooks and not model._backward_hooks
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_the_training_package_imports_nothing_from_models_defenses_or_audit():
    """models/ builds on training/, never the other way round (no import cycle)."""
    package = Path(privguard.training.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "privguard.errors" in imported and "privguard.training.loop" in imported
    forbidden = ("privguard.models", "privguard.defenses", "privguard.audit", "privguard.attacks")
    assert not [m for m in imported if m.startswith(forbidden)]
