#!/usr/bin/env python3
"""`make gpu-check`: train, predict and evaluate tiny models on CUDA in fp32 and bf16 through ptcli's command
functions, and compare the predictions with the same artifacts predicted on CPU in fp32.

Builds the test suite's tiny backbones (tests/tiny.py: a BERT and a Qwen2) and its synthetic reviews
(tests/synthetic.py), so it needs nothing but the bert-base-chinese vocab wheel. Prints one line per
backbone × precision (rows/s, accuracy, agreement with CPU) and exits 1 if any agreement is below the bar, 2 when
CUDA is absent. `--device cpu` runs the same steps on CPU: a dry run of the script itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

MIN_AGREEMENT = {"fp32": 0.99, "bf16": 0.95}  # share of rows whose predicted label matches the CPU fp32 one
TEMPLATES = {"bert": "<text>。[P][P]很[MASK]", "qwen2": "[P] <text> It was [MASK]"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run of the script")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=400, help="rows to predict")
    args = ap.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu-check: CUDA is not available (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); run it on a machine with an NVIDIA GPU and a CUDA build of torch",
              file=sys.stderr)
        return 2
    import synthetic
    import tiny
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    from ptcli.evaluate import EvalArgs, evaluate
    from ptcli.predict import PredictArgs, predict
    from ptcli.train import TrainArgs, train

    started = time.perf_counter()
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU (dry run)"
    print(f"gpu-check on {where}, torch {torch.__version__}")
    failed = []
    with tempfile.TemporaryDirectory(prefix="ptcli-gpu-check-") as tmp:
        d = Path(tmp)
        train_csv = synthetic.write_csv(d / "train.csv", synthetic.reviews(32, seed=1))
        test_csv = synthetic.write_csv(d / "test.csv", synthetic.reviews(args.rows, seed=2))
        # The BERT gets the test suite's seconds of pre-training, so its accuracy means something; the Qwen2 is
        # random: there only the agreement with CPU is checked.
        bert = synthetic.pretrain_bert(tiny.build_bert(d / "bert", hidden=64), steps=300)
        models = {"bert": bert, "qwen2": tiny.build_causal(d / "qwen2", "qwen2")}
        verbalizers = {"bert": '{"pos": "好", "neg": "差"}', "qwen2": '{"pos": "great", "neg": "bad"}'}
        for name, model in models.items():
            (d / f"{name}.txt").write_text(TEMPLATES[name] + "\n", encoding="utf-8")
            (d / f"{name}.json").write_text(verbalizers[name], encoding="utf-8")
            for precision in ("fp32", "bf16"):
                art = d / f"{name}-{precision}"
                train(TrainArgs(data=train_csv, template=d / f"{name}.txt", verbalizer=d / f"{name}.json",
                                model=str(model), output=art, epochs=args.epochs, device=args.device,
                                precision=precision, seed=0))
                on_device = predict(PredictArgs(artifact=art, input=test_csv, output=d / "dev.csv",
                                                device=args.device, precision=precision))
                report = evaluate(EvalArgs(artifact=art, data=test_csv, device=args.device, precision=precision))
                predict(PredictArgs(artifact=art, input=test_csv, output=d / "cpu.csv", device="cpu",
                                    precision="fp32"))
                agree = _agreement(d / "dev.csv", d / "cpu.csv")
                ok = agree >= MIN_AGREEMENT[precision]
                print(f"{name:6} {precision}: predict {on_device.rows_per_second:8.1f} rows/s, accuracy "
                      f"{report['accuracy']:.3f}, agreement with CPU fp32 {agree:.3f} "
                      f"{'ok' if ok else f'BELOW {MIN_AGREEMENT[precision]}'}")
                if not ok:
                    failed.append(f"{name} {precision}")
    print(f"done in {time.perf_counter() - started:.0f} s")
    if failed:
        print(f"gpu-check: predictions disagree with CPU for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _agreement(a: Path, b: Path) -> float:
    import pandas as pd

    pa, pb = pd.read_csv(a)["pred"], pd.read_csv(b)["pred"]
    return float((pa == pb).mean())


if __name__ == "__main__":
    sys.exit(main())
