"""Results must not depend on the thread count: importing ptcli sets MKL's strict reproducibility mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

# A matrix product whose sums MKL splits differently on 1 and 2 threads (seen on 2-core AVX2 machines): rows of a
# Qwen-sized hidden state times its MLP's up-projection.
PRODUCT = """
import os, sys, torch
if sys.argv[1] == "ptcli":
    import ptcli  # noqa: F401
torch.manual_seed(0)
y, x = torch.randn(896, 4864), torch.randn(7, 896)
torch.set_num_threads(1)
a = x @ y
torch.set_num_threads(2)
b = x @ y
print(float((a - b).abs().max()), os.environ.get("MKL_CBWR"))
"""


def _product_gap(mode: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", PRODUCT, mode], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    return float(out[0]), out[1]


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch is not built with MKL")
def test_importing_ptcli_makes_products_independent_of_threads() -> None:
    plain, _ = _product_gap("plain")
    if plain == 0.0:
        pytest.skip("on this CPU MKL's product is thread-independent without the setting: nothing to tell apart")
    gap, mode = _product_gap("ptcli")
    assert mode == "AUTO,STRICT"
    assert gap == 0.0


def test_a_users_mkl_setting_wins() -> None:
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE"}
    out = subprocess.run([sys.executable, "-c", "import os, ptcli; print(os.environ['MKL_CBWR'])"], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert out == "COMPATIBLE"
