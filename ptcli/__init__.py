"""ptcli: few-shot text classification with P-tuning on a frozen language model."""

import os

# MKL splits a matrix product's sums by thread count, so the same training gave different prompts under --threads 1
# and 2 (and, when MKL picks its threads by load, from one run to the next). Strict conditional numerical
# reproducibility keeps the CPU's fastest code path and makes those sums independent of the threads. MKL reads it at
# its first call, so it is set on import, before any; a value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
