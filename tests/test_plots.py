"""Pictures: written where promised, readable, with CJK glyphs from a font that has them."""

import pytest

pytest.importorskip("matplotlib")

from ptcli import plots
from ptcli.train import TrainArgs, train


def test_training_writes_its_curve_and_the_card_shows_it(models, review_files, tmp_path):
    result = train(TrainArgs(data=review_files["train"], template=review_files["template"], model=str(models["bert"]),
                             verbalizer=review_files["verbalizer"], output=tmp_path / "art", device="cpu",
                             precision="fp32", epochs=2))
    png = result.artifact / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](training.png)" in (result.artifact / "README.md").read_text(encoding="utf-8")


def test_a_cjk_font_with_han_glyphs_is_used():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    plots._pyplot()
    family = plots.cjk_font()
    assert family is not None
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    font = FT2Font(path)
    assert all(font.get_char_index(ord(c)) for c in "体育财经娱乐")  # glyphs, not boxes


def test_confusion_and_reliability_pictures(tmp_path):
    labels = ["体育", "财经", "娱乐"]
    plots.confusion(labels, [[5, 1, 0], [0, 4, 2], [1, 0, 6]], tmp_path / "c.png")
    bins = [{"lo": i / 15, "hi": (i + 1) / 15, "count": i % 3, "confidence": (i + 0.5) / 15,
             "accuracy": (i + 0.2) / 15} for i in range(15)]
    plots.reliability(bins, 0.05, tmp_path / "r.png")
    for name in ("c.png", "r.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_eval_plots_writes_confusion_and_reliability(models, review_files, tmp_path):
    from test_cli import assert_clean_error, invoke

    art = tmp_path / "art"
    assert invoke("train", review_files["train"], "--template", review_files["template"], "--model", models["bert"],
                  "--verbalizer", review_files["verbalizer"], "-o", art, "--epochs", 1, "--device", "cpu"
                  ).exit_code == 0
    result = invoke("eval", art, review_files["test"], "--plots", tmp_path / "pics", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    for name in ("confusion.png", "reliability.png"):
        assert (tmp_path / "pics" / name).read_bytes()[:4] == b"\x89PNG"
    pred = tmp_path / "pred.csv"
    assert invoke("predict", art, review_files["test"], "-o", pred, "--device", "cpu").exit_code == 0
    again = invoke("eval", "--predictions", pred, "--plots", tmp_path / "pics2", "--json")
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "pics2" / "reliability.png").is_file()
    (tmp_path / "afile").write_text("x")
    assert_clean_error(invoke("eval", art, review_files["test"], "--plots", tmp_path / "afile"), 1, "not a directory")
