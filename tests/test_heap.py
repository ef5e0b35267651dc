import subprocess
import sys
import textwrap

import pytest

from ptcli import heap

# In a fresh process: free one 16 MB tensor (glibc then raises its mmap threshold to 16 MB), allocate 300 1 MB tensors
# with small ones between them, free all but the last: from the heap, that memory stays resident; mmapped, it goes.
SCRIPT = textwrap.dedent("""
    import sys, torch
    from ptcli.heap import release_freed_memory_promptly
    if sys.argv[1] == "tuned":
        assert release_freed_memory_promptly()
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    big = torch.ones(4 * 2**20); del big
    base = rss()
    blocks = [(torch.ones(2**18), torch.ones(8)) for _ in range(300)]
    last = blocks[-1]
    del blocks
    print(rss() - base)
""")


def _retained(mode: str) -> float:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_activations_go_back_to_the_os():
    default = _retained("default")
    if default < 100:
        pytest.skip(f"this libc returned the memory anyway ({default:.0f} MB retained): nothing to show")
    assert _retained("tuned") < 50 < 100 <= default


def test_user_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert heap.release_freed_memory_promptly() is False


def test_only_train_tunes_the_heap(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ptcli.cli import app

    calls = []
    monkeypatch.setattr(heap, "release_freed_memory_promptly", lambda: calls.append(1) or True)
    CliRunner().invoke(app, ["templates", "--json"])
    assert calls == []  # inference pays page faults for nothing
    CliRunner().invoke(app, ["train", str(tmp_path / "missing.csv"), "--template", "review_zh"])
    assert calls == [1]
