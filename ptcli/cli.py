"""The command line: thin Typer wrappers that parse options and call the plain functions in train/predict/….

torch and transformers are imported inside the commands, so `ptcli --help` stays fast. Every user-fixable error
reaches the user through `_run` as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer 0.2x vendors its own copy of Click; its exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_errors

from ptcli import __version__

T = TypeVar("T")


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, schedulers and `kill` send) unwinds like Ctrl-C, so every temporary file and
    directory is removed on the way out; the exit code is the shell's 128 + 15."""

    exit_code = 143


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Group(TyperGroup):
    """Usage errors (a missing option, `--epochs abc`, an unknown command) as the same one `error:` line as every
    other error, instead of Click's boxed block."""

    def main(self, args: list[str] | None = None, *rest: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from ptcli.console import error

        args = _bare_ray(list(sys.argv[1:] if args is None else args))
        try:
            with _sigterm_unwinds():
                code = super().main(args, *rest, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            code = 0
        except click_errors.ClickException as e:
            where = getattr(getattr(e, "ctx", None), "command_path", None) or "ptcli"
            error(f"{' '.join(e.format_message().split())} (see `{where} --help`)")
            code = e.exit_code
        except typer.Abort:
            error("aborted")
            code = 1
        except KeyboardInterrupt as e:
            error("interrupted")
            code = getattr(e, "exit_code", 130)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _bare_ray(argv: list[str]) -> list[str]:
    """`--ray` with no ADDRESS after it (last, or followed by another option) means `--ray=`: a local Ray, or
    $RAY_ADDRESS. This typer's Click cannot give an option an optional value."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = "--ray="
    return out


app = typer.Typer(
    cls=_Group,
    name="ptcli",
    help="Few-shot text classification with P-tuning: trainable prompt tokens around your text, a frozen language "
    "model fills the [MASK], label words map to labels.\n\n"
    "Example:\n\n"
    "  ptcli train data.csv --template templates/review_zh.txt -o my-artifact\n\n"
    "  ptcli predict my-artifact input.csv -o predictions.csv",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)

Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, or cuda")]
Precision = Annotated[str, typer.Option(help="auto (bf16 on CUDA, and on CPU where it is faster), fp32, bf16, or "
                                         "int8 (predict/eval on CPU)")]
Json = Annotated[bool, typer.Option("--json", help="print machine-readable JSON on stdout")]
Format = Annotated[str | None, typer.Option("--format", help="csv, tsv, jsonl or parquet when the file suffix does "
                                                              "not say")]
Model = Annotated[str | None, typer.Option("--model", help="where the artifact's backbone is now, if it moved")]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _run(fn: Callable[[], T]) -> T:
    """Call `fn`, turning user-fixable errors into one line on stderr and an exit code, never a traceback."""
    from ptcli.console import error
    from ptcli.errors import PtcliError

    try:
        _quiet_libraries()
        return fn()
    except PtcliError as e:
        error(e.message)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        error("interrupted")
        raise typer.Exit(getattr(e, "exit_code", 130)) from None


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ptcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress or logs on stderr")] = False,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's); lower it when sharing the CPU")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    from ptcli.console import set_quiet
    set_quiet(quiet)
    if threads is not None:
        if threads < 1:
            raise typer.BadParameter("must be at least 1", param_hint="--threads")
        import torch

        torch.set_num_threads(threads)


@app.command(epilog="Example: ptcli train reviews.csv --template templates/review_zh.txt --verbalizer "
             "templates/review_zh.verbalizer.json -o reviews-artifact")
def train(
    data: Annotated[Path, typer.Argument(help="labeled rows: .csv, .tsv or .jsonl")],
    template: Annotated[Path, typer.Option(help="template file ([P] prompt tokens, [MASK] label slot, <text> input) "
                                                "or a shipped template's name, e.g. review_zh (see ptcli templates)")],
    model: Annotated[str, typer.Option(help="hub id, local model directory or .gguf file")] = "bert-base-chinese",
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside --model when that is a directory")] = None,
    verbalizer: Annotated[Path | None, typer.Option(help='JSON {"label": "word"} or {"label": ["w1", "w2"]}; '
                                                    "default: a shipped template's own, else the labels")] = None,
    dev: Annotated[Path | None, typer.Option(help="labeled dev rows; default: hold out part of DATA")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="artifact directory")] = None,
    format: Format = None,
    text_col: Annotated[str, typer.Option(help="column with the input text")] = "text",
    text_b_col: Annotated[str | None, typer.Option(help="column with the second text (<text_b>)")] = None,
    label_col: Annotated[str, typer.Option(help="column with the label")] = "label",
    encoder: Annotated[str, typer.Option(help="prompt encoder: lstm (paper), mlp or none")] = "lstm",
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 20,
    batch_size: Annotated[int, typer.Option(help="rows per step")] = 8,
    lr: Annotated[float, typer.Option(help="prompt encoder learning rate")] = 3e-3,
    patience: Annotated[int, typer.Option(help="stop after this many epochs without dev gain")] = 5,
    dev_fraction: Annotated[float, typer.Option(help="share of each class held out as dev without --dev")] = 0.25,
    seed: Annotated[int, typer.Option(help="seed for init, data order and the dev split")] = 42,
    device: Device = "auto",
    precision: Precision = "auto",
    max_length: Annotated[int, typer.Option(help="token limit; the input text is truncated, never the template")] = 256,
    tune_backbone: Annotated[bool, typer.Option(help="also train the backbone (saved in the artifact)")] = False,
    backbone_lr: Annotated[float, typer.Option(help="backbone learning rate with --tune-backbone")] = 1e-5,
    resume: Annotated[Path | None, typer.Option(help="artifact whose prompt encoder training continues")] = None,
    prompt_init: Annotated[str, typer.Option(
        help="where the prompts start: vocab (at the embeddings of sampled vocabulary tokens; the encoder learns a "
        "residual at token-embedding scale) or random (the paper's encoder init); --resume keeps the artifact's")
                           ] = "vocab",
    calibrate: Annotated[str, typer.Option(
        help="per-label score bias: none; contextual (divide by the label probabilities of content-free inputs "
        "'', 'N/A', '...'); bias (a bias trained with the prompts); fit (after training, the bias that best fits "
        "the training and dev rows at the kept prompts)")] = "fit",
    bias_lr: Annotated[float, typer.Option(help="learning rate of the label bias with --calibrate bias")] = 0.1,
    select: Annotated[str, typer.Option(
        help="which epoch to keep: dev-loss (lowest dev loss), dev-acc (best dev accuracy), kfold (cross-validate "
        "the epoch count on DATA, then train on all of it; no dev set)")] = "dev-loss",
    refit: Annotated[bool, typer.Option(
        help="after dev-loss/dev-acc chose the epoch, train again on the training and dev rows together for that "
        "many epochs (one more run; kfold always does)")] = False,
    demos: Annotated[str, typer.Option(
        metavar="N|all|auto", help="training rows per label shown, with their label word, before every row "
        "(in-context demonstrations, with the template's [P]; kept in the artifact); auto: 4 where the template's "
        "text reads before its slot (text first), else none")] = "auto",
    chat: Annotated[bool, typer.Option("--chat", help="put the template in the causal backbone's chat template: "
                                       "the text in the user turn, the label at the start of the answer")] = False,
    auto_words: Annotated[bool, typer.Option(
        "--auto-words", help="search the label words on the training rows (as `ptcli words` does) instead of "
        "--verbalizer; the artifact keeps the words found")] = False,
    text_first: Annotated[bool, typer.Option(
        help="causal backbones: inputs that come after [MASK] in the template move to its front, each with the "
        "clause naming it ('这是一条[P][MASK]评论:<text>' reads '评论:<text>\\n这是一条[P][MASK]'), so the label is "
        "read after the text; --no-text-first reads the template as written")] = True,
    head: Annotated[str, typer.Option(
        help="words (the verbalizer alone), linear (plus a per-label linear read-out of the slot's hidden state, "
        "started at --head-init and trained beside the prompts; kept in the artifact) or auto (linear from 3 "
        "labels on)")
                    ] = "auto",
    head_lr: Annotated[float | None, typer.Option(help="learning rate of the linear head (default: --lr)")] = None,
    head_init: Annotated[str, typer.Option(
        help="where the linear head starts: fit (the logistic regression of the training rows on their slot "
        "states, solved before the prompts train) or zero (the untrained classifier is the label words')")] = "fit",
    head_features: Annotated[str, typer.Option(
        help="what the linear head reads: slot (the hidden state the slot is read from) or slot+mean (also the "
        "mean of the row's hidden states up to the slot)")] = "slot+mean",
    head_refit: Annotated[bool, typer.Option(
        help="after the epoch is chosen, fit the linear head again on the training and dev rows at the kept "
        "prompts (nothing else trains)")] = True,
    json_: Json = False,
) -> None:
    """Train P-tuning prompts on labeled rows; writes an artifact directory."""
    from ptcli.heap import release_freed_memory_promptly

    release_freed_memory_promptly()  # training only: it costs predict ~25% in page faults (see heap.py)

    def go() -> None:
        from ptcli.demos import parse_count
        from ptcli.shipped import resolve
        from ptcli.train import TrainArgs
        from ptcli.train import train as run_train

        args = TrainArgs(data=data, template=template, model=model, gguf_file=gguf_file, verbalizer=verbalizer,
                         dev=dev, output=output, format=format, text_col=text_col, text_b_col=text_b_col,
                         label_col=label_col, encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr,
                         patience=patience, dev_fraction=dev_fraction, seed=seed, device=device, precision=precision,
                         max_length=max_length, tune_backbone=tune_backbone, backbone_lr=backbone_lr, resume=resume,
                         prompt_init=prompt_init, calibrate=calibrate, bias_lr=bias_lr, select=select, refit=refit,
                         demos=parse_count(demos), chat=chat, text_first=text_first, auto_words=auto_words,
                         head=head, head_lr=head_lr, head_init=head_init, head_features=head_features,
                         head_refit=head_refit)
        args.template, args.verbalizer = resolve(template, verbalizer)  # shipped templates by name
        if auto_words and verbalizer is None:
            args.verbalizer = None  # searched, not the shipped template's words
        result = run_train(args)
        if json_:
            _print_json(result.to_dict())
        else:
            typer.echo(f"artifact\t{result.artifact}\ndev_accuracy\t{result.dev['accuracy']:.4f}\n"
                       f"dev_accuracy_untrained\t{result.dev_untrained['accuracy']:.4f}\nbest_epoch\t{result.best_epoch}")

    _run(go)


@app.command(epilog="Examples: ptcli predict reviews-artifact new.csv -o predictions.csv;  "
             "ptcli predict art-seed1 art-seed2 art-seed3 new.csv -o predictions.csv (an ensemble)")
def predict(
    artifacts: Annotated[list[Path], typer.Argument(
        metavar="ARTIFACT", show_default=False, help="artifact directory from ptcli train; several (same labels, "
        "same backbone) are averaged as an ensemble, the backbone loaded once")],
    input: Annotated[Path, typer.Argument(help="rows to classify (.csv, .tsv, .jsonl or .parquet); always last")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="output file (.csv/.tsv/.jsonl); default stdout")
    ] = None,
    text_col: Annotated[str | None, typer.Option(help="input text column (default: as in training)")] = None,
    text_b_col: Annotated[str | None, typer.Option(help="second text column (default: as in training)")] = None,
    format: Format = None,
    batch_size: Annotated[int, typer.Option(help="rows per forward pass")] = 32,
    device: Device = "auto",
    precision: Precision = "auto",
    model: Model = None,
    abstain_below: Annotated[float | None, typer.Option(
        metavar="P", help="leave pred empty, with abstained=true, where the confidence is below P (0-1); every row "
        "and its probabilities are still written")] = None,
    json_: Json = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]", help="predict on Ray Data actors: --ray alone starts a local Ray (or joins "
        "$RAY_ADDRESS); --ray auto or --ray ray://HOST:10001 joins a cluster (pip install 'ptcli[ray]')")] = None,
    workers: Annotated[int | None, typer.Option(help="with --ray: actors, each loading the model once "
                                                     "(default 1; each uses --threads CPU threads, default 1)")] = None,
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Add pred, confidence and prob_<label> columns to every input row (several artifacts: their mean)."""

    def go() -> None:
        from ptcli.console import log
        from ptcli.errors import UsageError
        from ptcli.predict import PredictArgs
        from ptcli.predict import predict as run_predict

        if workers is not None and ray is None:
            raise UsageError("--workers needs --ray; without it predict runs in this process")
        threads = ctx.parent.params.get("threads") if ctx is not None and ctx.parent is not None else None
        result = run_predict(PredictArgs(artifact=artifacts, input=input, output=output, text_col=text_col,
                                         text_b_col=text_b_col, format=format, batch_size=batch_size, device=device,
                                         precision=precision, model=model, json=json_, ray=ray,
                                         workers=workers or 1, threads=threads or 1, abstain_below=abstain_below))
        summary = {"rows": result.rows, "seconds": round(result.seconds, 3),
                   "rows_per_second": round(result.rows_per_second, 2), "output": result.output,
                   "artifacts": result.artifacts, "members": len(result.artifacts)}
        if output is not None:
            if json_:
                _print_json(summary)
            else:
                typer.echo(str(output))
        log(f"{result.rows} rows in {result.seconds:.1f}s ({result.rows_per_second:.1f} rows/s) → {result.output}")

    _run(go)


def _eval_paths(artifacts: list[Path] | None, data: Path | None, predictions: Path | None
                ) -> tuple[list[Path] | None, Path | None]:
    """`eval ARTIFACT... DATA`, or with --predictions `eval [DATA]` (the last positional is always DATA):
    (artifacts, data)."""
    from ptcli.errors import UsageError

    paths = [*(artifacts or []), *([data] if data is not None else [])]
    if predictions is None:
        if len(paths) < 2:
            raise UsageError("eval takes ARTIFACT DATA (an artifact directory, or several to ensemble, then labeled "
                             "rows), or --predictions PRED [DATA] to score a predictions file without a model")
        return paths[:-1], paths[-1]
    if len(paths) > 1:
        raise UsageError(f"--predictions {predictions}: scores the file without a model; give only the labeled rows "
                         f"(ptcli eval --predictions PRED [DATA]), not {' '.join(map(str, paths))}")
    return None, (paths[0] if paths else None)


@app.command(name="eval", epilog="Examples: ptcli eval reviews-artifact test.csv --json;  "
             "ptcli eval art-seed1 art-seed2 test.csv (an ensemble);  "
             "ptcli eval --predictions predictions.csv test.csv --errors 10")
def eval_(
    artifacts: Annotated[list[Path] | None, typer.Argument(
        metavar="ARTIFACT", show_default=False, help="artifact directory from ptcli train; several (same labels, same "
        "backbone) are averaged as an ensemble; not with --predictions")] = None,
    data: Annotated[Path | None, typer.Argument(
        metavar="DATA", show_default=False, help="labeled rows (.csv, .tsv, .jsonl or .parquet), always last; with "
        "--predictions it may be left out when the predictions file still has the label column")] = None,
    predictions: Annotated[Path | None, typer.Option(
        metavar="PRED", help="score this file from ptcli predict (pred, prob_<label> columns); loads no model")] = None,
    id_col: Annotated[str | None, typer.Option(
        help="with --predictions DATA: join the two files by this column (unique ids) instead of row order")] = None,
    text_col: Annotated[str | None, typer.Option(help="input text column (default: as in training)")] = None,
    text_b_col: Annotated[str | None, typer.Option(help="second text column (default: as in training)")] = None,
    label_col: Annotated[str | None, typer.Option(help="label column (default: as in training)")] = None,
    format: Format = None,
    batch_size: Annotated[int, typer.Option(help="rows per forward pass")] = 32,
    device: Device = "auto",
    precision: Precision = "auto",
    model: Model = None,
    abstain_below: Annotated[float | None, typer.Option(
        metavar="P", help="also report coverage and accuracy on the rows whose confidence is at least P (0-1)")] = None,
    errors: Annotated[int, typer.Option(metavar="N", help="list the N most confident mistakes")] = 0,
    plots: Annotated[Path | None, typer.Option(
        metavar="DIR", help="also write confusion.png and reliability.png into DIR (needs ptcli[plots])")] = None,
    json_: Json = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, calibration (ECE, reliability bins) and
    selective accuracy on labeled rows."""

    def go() -> None:
        from ptcli import plots as pictures
        from ptcli.evaluate import EvalArgs, evaluate
        from ptcli.report import print_report

        if plots is not None:
            pictures.check_directory(plots)  # before any model is loaded
        arts, labeled = _eval_paths(artifacts, data, predictions)
        report = evaluate(EvalArgs(artifact=arts, data=labeled, text_col=text_col, text_b_col=text_b_col,
                                   label_col=label_col, format=format, batch_size=batch_size, device=device,
                                   precision=precision, model=model, predictions=predictions, id_col=id_col,
                                   abstain_below=abstain_below, errors=errors))
        if plots is not None:
            report["plots"] = [str(p) for p in pictures.report_pictures(report, plots)]
        _print_json(report) if json_ else print_report(report)

    _run(go)


@app.command(name="export-prompts", epilog="Example: ptcli export-prompts reviews-artifact -o prompts.safetensors")
def export_prompts(
    artifact: Annotated[Path, typer.Argument(help="artifact directory from ptcli train")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output file")],
    format: Annotated[str | None, typer.Option(
        "--format", help="safetensors, npy (+ .json sidecar), json, or peft (a PEFT P-tuning adapter directory for "
        "causal LMs, templates with every [P] first)")] = None,
    json_: Json = False,
) -> None:
    """Write the frozen prompt vectors [m, H] with the template and backbone identity."""

    def go() -> None:
        from ptcli.export import ExportArgs, export

        info = export(ExportArgs(artifact=artifact, output=output, format=format))
        _print_json(info) if json_ else typer.echo("\n".join(info["written"]))

    _run(go)


@app.command(name="inspect", epilog="Example: ptcli inspect reviews-artifact --top 10")
def inspect_(
    artifact: Annotated[Path, typer.Argument(help="artifact directory from ptcli train")],
    top: Annotated[int, typer.Option(help="nearest vocabulary tokens shown for each [P]")] = 5,
    model: Model = None,
    json_: Json = False,
) -> None:
    """Template, labels, backbone, training record and curve, and each learned [P] read as its nearest tokens."""

    def go() -> None:
        from ptcli.inspect_view import print_inspection
        from ptcli.inspection import InspectArgs, inspect_artifact

        report = inspect_artifact(InspectArgs(artifact=artifact, model=model, top=top))
        _print_json(report) if json_ else print_inspection(report)

    _run(go)


@app.command(name="words", epilog="Example: ptcli words reviews.csv --template review_zh.causal --model "
             "qwen2.5-0.5b-instruct-q4_k_m.gguf -o verbalizer.json; then ptcli train … --verbalizer verbalizer.json")
def words_(
    data: Annotated[Path, typer.Argument(help="labeled rows: .csv, .tsv, .jsonl or .parquet")],
    template: Annotated[Path, typer.Option(help="template file or a shipped template's name; its [P] are left out "
                                                "(the model is searched zero-shot)")],
    model: Annotated[str, typer.Option(help="hub id, local model directory or .gguf file")] = "bert-base-chinese",
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside --model when that is a directory")] = None,
    top: Annotated[int, typer.Option(help="words per label")] = 3,
    max_tokens: Annotated[int, typer.Option(help="longest word in tokens (causal LMs; a masked LM's words have "
                                                 "its [MASK] count)")] = 3,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="verbalizer JSON to write, for ptcli train "
                                                "--verbalizer")] = None,
    format: Format = None,
    text_col: Annotated[str, typer.Option(help="column with the input text")] = "text",
    text_b_col: Annotated[str | None, typer.Option(help="column with the second text (<text_b>)")] = None,
    label_col: Annotated[str, typer.Option(help="column with the label")] = "label",
    batch_size: Annotated[int, typer.Option(help="rows per forward pass")] = 8,
    max_length: Annotated[int, typer.Option(help="token limit; the input text is truncated")] = 256,
    text_first: Annotated[bool, typer.Option(help="causal backbones: read the inputs that follow [MASK] first, as "
                                             "train does by default")] = True,
    device: Device = "auto",
    precision: Precision = "auto",
    json_: Json = False,
) -> None:
    """Propose label words: for each label, the words the frozen model ranks highest on its rows and lowest on the
    others'; writes a verbalizer JSON to edit and train with."""

    def go() -> None:
        from ptcli.words import SearchConfig, WordsArgs, format_table
        from ptcli.words import words as run_words

        config = SearchConfig(top=top, max_tokens=max_tokens, batch_size=batch_size, max_length=max_length,
                              text_first=text_first)
        result = run_words(WordsArgs(data=data, template=template, model=model, gguf_file=gguf_file, output=output,
                                     format=format, text_col=text_col, text_b_col=text_b_col, label_col=label_col,
                                     device=device, precision=precision, config=config))
        _print_json(result.to_dict()) if json_ else typer.echo(format_table(result))

    _run(go)


@app.command(name="templates", epilog="Example: ptcli train reviews.csv --template review_zh -o reviews-artifact")
def templates_(json_: Json = False) -> None:
    """List the shipped templates: name, backbone kind (masked/causal) and purpose; use one with --template NAME."""

    def go() -> None:
        from ptcli.shipped import catalog

        shipped = catalog()
        if json_:
            _print_json([s.to_dict() for s in shipped])
            return
        width = max((len(s.name) for s in shipped), default=0)
        for s in shipped:
            typer.echo(f"{s.name:<{width}}  {s.kind:<6}  {s.purpose}")

    _run(go)


def main() -> None:
    app()
