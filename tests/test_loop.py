"""The shared epoch loop: best-epoch rule, early stop, schedule and seeded order."""

import pytest
import torch

from ptcli.loop import LoopConfig, fit, warmup_then_decay


def run(reports, patience=2, epochs=None, n_rows=10, seed=0, select="dev-acc"):
    script = iter(reports)
    seen, kept = [], []
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    def step(idx, epoch):
        seen.append((epoch, list(idx)))
        return float(epoch)

    def keep():
        kept.append(len(kept))
        return kept[-1]

    config = LoopConfig(epochs=epochs or len(reports) - 1, batch_size=4, patience=patience, seed=seed, select=select)
    return fit(n_rows, step, lambda: next(script), keep, opt, config), seen


def test_best_epoch_is_highest_accuracy_then_lowest_loss_and_patience_stops():
    reports = [{"accuracy": 0.5, "loss": 0.7}, {"accuracy": 0.75, "loss": 0.6}, {"accuracy": 0.75, "loss": 0.5},
               {"accuracy": 0.7, "loss": 0.4}, {"accuracy": 0.6, "loss": 0.4}, {"accuracy": 1.0, "loss": 0.1}]
    result, seen = run(reports, patience=2)
    assert result.best_epoch == 2 and result.best == 2  # the tie at 0.75 goes to the lower loss
    assert len(result.history) == 4  # epochs 3 and 4 gained nothing: stopped before epoch 5's 1.0
    assert {e for e, _ in seen} == {1, 2, 3, 4} and len(seen) == 4 * 3  # 10 rows in batches of 4


def test_untrained_state_is_kept_when_no_epoch_beats_it():
    reports = [{"accuracy": 0.9, "loss": 0.2}] + [{"accuracy": 0.9, "loss": 0.3}] * 3
    result, _ = run(reports, patience=5)
    assert result.best_epoch == 0 and result.best == 0 and result.untrained["accuracy"] == 0.9


def test_data_order_is_seeded_and_covers_every_row():
    reports = [{"accuracy": 0.5, "loss": 1.0 - i / 10} for i in range(4)]
    _, a = run(reports, seed=3)
    _, b = run(reports, seed=3)
    _, c = run(reports, seed=4)
    assert a == b and a != c
    assert sorted(i for e, idx in a if e == 1 for i in idx) == list(range(10))


def test_warmup_then_linear_decay_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_then_decay(opt, total_steps=10, warmup=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] < lrs[2] and opt.param_groups[0]["lr"] == 0.0


def test_dev_loss_rule_keeps_the_lowest_loss_and_ties_go_to_accuracy():
    reports = [{"accuracy": 0.5, "loss": 0.7}, {"accuracy": 0.75, "loss": 0.6}, {"accuracy": 0.5, "loss": 0.4},
               {"accuracy": 0.75, "loss": 0.4}, {"accuracy": 1.0, "loss": 0.45}]
    script = iter(reports)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    result = fit(8, lambda idx, e: 0.0, lambda: next(script), lambda: None, opt,
                 LoopConfig(epochs=4, batch_size=4, patience=5, select="dev-loss"))
    assert result.best_epoch == 3  # loss 0.4 twice: the one with accuracy 0.75; epoch 4's accuracy 1.0 loses


def test_last_rule_and_no_dev_rows_run_every_epoch():
    kept = []
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    result = fit(8, lambda idx, e: float(e), None, lambda: kept.append(1) or len(kept), opt,
                 LoopConfig(epochs=3, batch_size=4, patience=1, select="last"))
    assert result.best_epoch == 3 and result.best == 4 and len(result.history) == 3  # patience never bites
    assert result.untrained == {} and set(result.history[0]) == {"epoch", "train_loss", "seconds"}
    with pytest.raises(ValueError, match="last"):
        fit(8, lambda idx, e: 0.0, None, lambda: None, opt, LoopConfig(epochs=1, select="dev-acc"))


def test_a_longer_schedule_is_stopped_part_way():
    def lrs(config):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        seen = []
        fit(8, lambda idx, e: seen.append(opt.param_groups[0]["lr"]) or 0.0, None, lambda: None, opt, config)
        return seen

    full = lrs(LoopConfig(epochs=4, batch_size=4, warmup=0.25, select="last"))
    part = lrs(LoopConfig(epochs=2, batch_size=4, warmup=0.25, select="last", schedule_epochs=4))
    assert part == full[:4] and full[-1] > 0  # the first two epochs of the four-epoch schedule, not a shorter one
