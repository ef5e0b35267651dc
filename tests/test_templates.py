"""Shipped templates: found by name, listed by `ptcli templates`, and shipped inside the wheel."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_cli import assert_clean_error, invoke

from ptcli import shipped
from ptcli.errors import PtcliError
from ptcli.template import Template

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = shipped.directory()
NAMES = {"news_zh", "news_zh.causal", "pair_zh", "review_zh", "review_zh.causal", "sentiment_en",
         "sentiment_en.causal"}


def test_catalog_lists_every_shipped_template_with_kind_purpose_and_verbalizer():
    entries = {s.name: s for s in shipped.catalog()}
    assert set(entries) == NAMES
    for name, s in entries.items():
        assert s.kind == ("causal" if name.endswith(".causal") else "masked"), name
        assert s.purpose and s.verbalizer == str(SHIPPED / f"{name}.verbalizer.json")
        Template.load(s.template)  # the index beside them is not a template and the parser never sees it
    # the causal ones put the slot at the end, as the README says a causal template should
    assert Template.load(entries["review_zh.causal"].template).source.rstrip().endswith("[MASK]")


def test_repository_templates_dir_is_the_shipped_one():
    assert (ROOT / "templates" / "review_zh.txt").read_bytes() == (SHIPPED / "review_zh.txt").read_bytes()


@pytest.mark.parametrize("value", ["review_zh", "review_zh.txt", "templates/review_zh.txt"])
def test_resolve_by_name_brings_the_shipped_verbalizer(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of that name here
    template, verbalizer = shipped.resolve(Path(value), None)
    assert template == SHIPPED / "review_zh.txt" and verbalizer == SHIPPED / "review_zh.verbalizer.json"


def test_resolve_causal_variant_and_explicit_verbalizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.json"
    mine.write_text('{"pos": "好", "neg": "差"}', encoding="utf-8")
    template, verbalizer = shipped.resolve(Path("review_zh.causal"), mine)
    assert template == SHIPPED / "review_zh.causal.txt" and verbalizer == mine
    assert shipped.resolve(Path("review_zh.causal"), Path("sentiment_en"))[1] == \
        SHIPPED / "sentiment_en.verbalizer.json"


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("review_zh").write_text("<text>[MASK]", encoding="utf-8")
    assert shipped.resolve(Path("review_zh"), None) == (Path("review_zh"), None)
    Path("sentiment_en").mkdir()  # a directory of that name does not shadow the template
    assert shipped.resolve(Path("sentiment_en"), None)[0] == SHIPPED / "sentiment_en.txt"
    elsewhere = tmp_path / "sub" / "review_zh.txt"  # a path with a directory is a path, never a name
    assert shipped.resolve(elsewhere, None) == (elsewhere, None)


def test_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PtcliError, match=r"no shipped template of that name.*review_zh.*ptcli templates"):
        shipped.resolve(Path("review_xx"), None)


def test_templates_command_lists_them():
    result = invoke("templates")
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert lines == {name: "causal" if name.endswith(".causal") else "masked" for name in NAMES}
    data = json.loads(invoke("templates", "--json").stdout)
    assert {d["name"] for d in data} == NAMES and all(Path(d["template"]).is_file() for d in data)


def test_train_with_a_shipped_template_by_name(models, review_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "art"
    result = invoke("train", review_files["train"], "--template", "review_zh", "--model", models["bert"], "-o", out,
                    "--epochs", 1, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((out / "ptcli.json").read_text(encoding="utf-8"))
    assert meta["template"]["text"] == (SHIPPED / "review_zh.txt").read_text(encoding="utf-8").strip()
    assert meta["verbalizer"] == {"pos": ["好", "棒"], "neg": ["差", "烂"]}  # the shipped verbalizer came along
    assert "shipped review_zh" in result.stderr
    assert_clean_error(invoke("train", review_files["train"], "--template", "nope", "--model", models["bert"], "-o",
                              tmp_path / "x", "--device", "cpu"), 1, "nope", "review_zh")


def test_wheel_ships_the_templates_and_an_installed_copy_resolves_them(tmp_path):
    """Build the wheel offline from a copy of the source (the tree stays clean), install it into a bare directory
    and resolve a name with ptcli imported from there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ptcli", src / "ptcli", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # offline: setuptools comes from this environment
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src], check=True,
                   env=env, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("ptcli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ptcli/templates/{n}.txt" for n in NAMES} <= names and "ptcli/templates/index.json" in names
    assert {f"ptcli/templates/{n}.verbalizer.json" for n in NAMES} <= names
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True, env=env, cwd=tmp_path)
    code = ("import pathlib, ptcli, ptcli.shipped as s; t, v = s.resolve(pathlib.Path('review_zh'), None); "
            "print(ptcli.__file__, t, v, len(s.catalog()), sep='\\n')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)})
    where, template, verbalizer, count = run.stdout.splitlines()
    assert Path(where).is_relative_to(target)
    assert Path(template) == target / "ptcli/templates/review_zh.txt" and Path(template).is_file()
    assert Path(verbalizer) == target / "ptcli/templates/review_zh.verbalizer.json"
    assert int(count) == len(NAMES)
