"""ptcli: few-shot text classification with P-tuning on a frozen language model."""

import os

# MKL splits a matrix product's sums by thread count (7x896 @ 896x4864 differs by 1.8e-4 between 1 and 2 threads on
# a 2-core AVX2 CPU). Strict conditional numerical reproducibility keeps the CPU's fastest code path and makes those
# sums independent of the threads, at no cost measured. It is one source of drift, not all: training still differs
# in the 7th digit between --threads 1 and 2 from its first epoch (other kernels), and a few-shot run can amplify that.
# MKL reads it at its first call, so it is set on import, before any; a value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
