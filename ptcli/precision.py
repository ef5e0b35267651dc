"""Where a backbone runs and in which precision: device, weights' dtype, autocast, and int8 on CPU.

On CPU the weights always stay fp32. PyTorch's CPU kernels are fast for fp32 weights under bf16 autocast but fall
off their fast path with bf16 *weights* (issue 8: ~15× slower on an avx512_bf16 CPU, ~100× on AVX2), so bf16 on CPU
is autocast only, and `auto` picks it only when a short forward of the real model says it is faster here.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptcli.console import warn
from ptcli.errors import PtcliError, UsageError
from ptcli.paths import cache_dir, read_json_cache, write_json_cache

CHOICES = ("auto", "fp32", "bf16", "int8")


@dataclass(frozen=True)
class Precision:
    """How a backbone computes: `weights` is the parameters' dtype, `compute` the autocast dtype (fp32: none)."""

    name: str  # "fp32" | "bf16" | "int8"
    weights: torch.dtype = torch.float32
    compute: torch.dtype = torch.float32

    @property
    def int8(self) -> bool:
        return self.name == "int8"


FP32 = Precision("fp32")
INT8 = Precision("int8")  # nn.Linear weights int8, activations fp32; CPU only


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtcliError(f"--device {device}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu or --device auto")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise UsageError(f"--device {device!r}: choose auto, cpu or cuda")


def cpu_has_native_bf16() -> bool | None:
    """True/False from the CPU flags where the OS shows them (Linux), None where it cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), None)
    if flags is None:
        return None
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


_PROBED: dict[str, bool] = {}


def _machine_key(key: str) -> str:
    """The probe's verdict holds for this model on this CPU, torch build and thread count, nothing wider."""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text(
            encoding="utf-8", errors="replace").splitlines() if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    return f"{key}|{cpu}|{cpu_has_native_bf16()}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _probe_file() -> Path:
    return cache_dir("precision") / "bf16-probe.json"


def _remembered(machine_key: str) -> bool | None:
    value = read_json_cache(_probe_file()).get(machine_key)
    return value if isinstance(value, bool) else None


def _remember(machine_key: str, verdict: bool) -> None:
    data = read_json_cache(_probe_file())
    data[machine_key] = verdict
    write_json_cache(_probe_file(), data)


def bf16_autocast_is_faster(model: Any, key: str, batch: int = 4, length: int = 32) -> bool:
    """Time a short forward of the model's body in fp32 and under bf16 autocast (weights fp32 in both), once per
    process and `key`. A matmul of the right width is not enough: attention, norms and casts decide it too.

    A clear verdict (bf16 under 0.6× or over 1.0× the fp32 time) is remembered on disk per model, CPU, torch and
    thread count, which saves every later command the probe (3-4 s for Qwen2-0.5B on 2 cores); a near tie, which
    a busy machine can produce, is measured again next time."""
    if key not in _PROBED:
        machine_key = _machine_key(key)
        remembered = _remembered(machine_key)
        if remembered is not None:
            _PROBED[key] = remembered
            return remembered
        body = model.base_model
        vocab = int(model.get_input_embeddings().weight.shape[0])
        ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))

        def run(ctx: Any) -> float:
            t = time.perf_counter()
            with torch.inference_mode(), ctx():
                body(input_ids=ids)
            return time.perf_counter() - t

        def bf16() -> Any:
            return torch.autocast("cpu", dtype=torch.bfloat16)

        run(contextlib.nullcontext), run(bf16)  # warm-up: first calls allocate and pick kernels
        # Interleaved, best of two each: a burst of load from another process then hits both sides alike.
        pairs = [(run(contextlib.nullcontext), run(bf16)) for _ in range(2)]
        fp32_s, bf16_s = min(p[0] for p in pairs), min(p[1] for p in pairs)
        _PROBED[key] = bf16_s < 0.85 * fp32_s  # a near-tie goes to fp32: exact and deterministic
        if bf16_s < 0.6 * fp32_s or bf16_s > fp32_s:
            _remember(machine_key, _PROBED[key])
    return _PROBED[key]


def check(precision: str, device: torch.device, training: bool = False) -> None:
    """Refuse a precision that cannot work here before anything slow (loading) happens."""
    if precision not in CHOICES:
        raise UsageError(f"--precision {precision!r}: choose {', '.join(CHOICES)}")
    if precision == "int8" and training:
        raise UsageError("--precision int8 is for predict and eval: its int8 layers pass no gradients to train prompts "
                         "through; train with auto, fp32 or bf16, then predict with --precision int8")
    if precision == "int8" and device.type != "cpu":
        raise UsageError(f"--precision int8 runs on CPU only (dynamic int8 matmuls); use --device cpu, or bf16 on "
                         f"{device.type}")


def resolve(precision: str, device: torch.device, model: Any, key: str, trainable: bool = False,
            training: bool = False) -> Precision:
    """The precision a backbone runs in, from --precision, the device and (for `auto` on CPU) a measurement."""
    check(precision, device, training)
    if precision == "int8":
        return INT8
    hidden = int(model.get_input_embeddings().weight.shape[1])
    if device.type == "cuda":
        bf16_ok = precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported())
        if not bf16_ok:
            return FP32
        # A frozen backbone can live in bf16 on CUDA; a trained one keeps fp32 master weights.
        return Precision("bf16", torch.float32 if trainable else torch.bfloat16, torch.bfloat16)
    native = cpu_has_native_bf16()
    if precision == "bf16":
        if native is False:
            warn("--precision bf16: this CPU has no native bf16 (no avx512_bf16/amx_bf16), so bf16 is far slower "
                 "than fp32 here; use --precision fp32 or auto")
        return Precision("bf16", torch.float32, torch.bfloat16)
    if precision == "fp32" or native is False or hidden < 512:
        # Small models gain nothing from bf16 and would lose determinism against fp32 references.
        return FP32
    return Precision("bf16", torch.float32, torch.bfloat16) if bf16_autocast_is_faster(model, key) else FP32


def apply(model: Any, precision: Precision, device: torch.device) -> None:
    """Move the model to its device and weights' dtype; int8 quantizes the body's nn.Linear layers in place."""
    model.to(device=device, dtype=precision.weights)
    if precision.int8:
        quantize_int8(model)


def quantize_int8(model: Any) -> None:
    """Dynamic int8 for every nn.Linear of the model's body. The LM head stays fp32: ptcli applies it at a few
    scored positions only, so quantizing it would save nothing and cost accuracy, and it may be tied to the
    input embeddings, which must stay exact for the prompts and the artifact's fingerprint."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    body = model.base_model
    if body is model:
        raise UsageError(f"--precision int8: {type(model).__name__} has no separate body to quantize; use fp32")
    if not any(isinstance(m, nn.Linear) for m in body.modules()):
        # GPT-2 style Conv1D layers are not nn.Linear: quantizing nothing would only pretend to be int8.
        raise UsageError(f"--precision int8: {type(model).__name__} has no nn.Linear layers to quantize; use fp32")
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, but still the kept path in torch's wheel.
        warnings.simplefilter("ignore")
        # One scale per output channel: per-tensor scales let Qwen's outlier channels flatten all the others.
        quantize_dynamic(body, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
