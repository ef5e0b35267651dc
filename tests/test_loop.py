"""The shared epoch loop: best-epoch rule, early stop, schedule and seeded order."""

import pytest
import torch

from ptcli.loop import LoopConfig, accuracy_floor, fit, warmup_then_decay


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
    reports = [{"accuracy": 0.5, "loss": 0.7, "n": 4}, {"accuracy": 0.75, "loss": 0.6}, {"accuracy": 0.5, "loss": 0.4},
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


def dev_loss_run(reports, patience=5):
    script = iter(reports)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return fit(8, lambda idx, e: 0.0, lambda: next(script), lambda: None, opt,
               LoopConfig(epochs=len(reports) - 1, batch_size=4, patience=patience, select="dev-loss"))


def test_dev_loss_never_keeps_an_epoch_far_below_the_untrained_accuracy():
    # THUCNews seed 3 (2026-11-30): a diverging run lowered the dev loss of confidently wrong rows while its
    # accuracy fell to chance; 2 SE of 0.275 on 40 rows is 0.141, so 0.10 is out and 0.225 is noise.
    untrained = {"accuracy": 0.275, "loss": 3.0, "n": 40}
    assert accuracy_floor(untrained) == pytest.approx(0.275 - 2 * (0.275 * 0.725 / 40) ** 0.5)
    result = dev_loss_run([untrained, {"accuracy": 0.10, "loss": 2.4}, {"accuracy": 0.225, "loss": 2.5},
                           {"accuracy": 0.10, "loss": 2.0}])
    assert result.best_epoch == 2
    result = dev_loss_run([untrained, {"accuracy": 0.10, "loss": 2.4}, {"accuracy": 0.10, "loss": 2.0}], patience=2)
    assert result.best_epoch == 0 and len(result.history) == 2  # floored epochs count towards patience


def test_accuracy_floor_allows_at_least_one_row():
    perfect = {"accuracy": 1.0, "loss": 0.5, "n": 4}  # no binomial spread at p = 1: one row is still noise
    assert dev_loss_run([perfect, {"accuracy": 0.75, "loss": 0.4}]).best_epoch == 1
    assert dev_loss_run([perfect, {"accuracy": 0.5, "loss": 0.1}]).best_epoch == 0
    # one row fewer, computed as (n − 1)/n, must not round below 1 − 1/n
    assert all((n - 1) / n >= accuracy_floor({"accuracy": n / n, "n": n}) for n in range(1, 200))
