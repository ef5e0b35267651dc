"""`ptcli predict --ray`: the same prediction, spread over a pool of Ray actors with Ray Data (the `ray` extra).

Rows are read by ptcli's own readers (`iter_table`) inside one Ray read task, so every cell is the string the
single-process path would see (Ray's CSV reader would infer types and turn "NA" or "007" into something else). Each
chunk becomes one block; `map_batches` hands blocks to N actors, each of which loads the artifact(s) and the backbone
once and runs `ptcli.predict.ChunkPredictor` — the very code the single-process path runs. Blocks come back in
input order (`preserve_order`, and every block carries its first row number, which the driver checks) and are
written by ptcli's writers through the same atomic file, so formats, order and atomicity match.

The read task runs on the driver's node (INPUT is read where ptcli runs); with a Ray Client address (`ray://`) it
runs on the cluster, and INPUT must be readable there. The artifact and the backbone are loaded by each actor, so
they must be readable at the same path on every node.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ptcli.data import iter_table
from ptcli.ensemble import as_paths
from ptcli.errors import PtcliError, UsageError

if TYPE_CHECKING:
    from ptcli.predict import Outputs, PredictArgs

try:  # the extra may be missing: `RayRun` then says how to install it
    from ray.data import Datasource
except ImportError:  # pragma: no cover - exercised only without the extra
    Datasource = object

INSTALL = "pip install 'ptcli[ray]'"
ROW = "__ptcli_row__"  # each block's 0-based input row numbers: they travel with the rows and come back checked
# Rows per block (one actor call) at most: smaller than predict's chunks so that N actors share even a few thousand
# rows, large enough that Ray's per-block cost (milliseconds) is small next to scoring them.
BLOCK_ROWS = 1024


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # needs pyarrow too
    except ImportError:
        raise PtcliError(f"--ray needs Ray Data, which is not installed; install it with {INSTALL}") from None
    return ray


class TableSource(Datasource):  # type: ignore[misc,valid-type]
    """INPUT as one read task that streams ptcli's chunks, each a block with its row numbers in ROW."""

    def __init__(self, path: Path, fmt: str | None, chunk_rows: int, local: bool) -> None:
        super().__init__()
        self.path, self.fmt, self.chunk_rows, self.local = path, fmt, chunk_rows, local

    @property
    def supports_distributed_reads(self) -> bool:
        return not self.local  # False: Ray runs the read on the driver's node, where INPUT is

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[Any]:
        from ray.data import ReadTask
        from ray.data.block import BlockMetadata

        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(str(self.path),))
        read = partial(read_blocks, self.path, self.fmt, self.chunk_rows)
        return [ReadTask(read, meta, per_task_row_limit=per_task_row_limit)]


def read_blocks(path: Path, fmt: str | None, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for chunk in iter_table(path, fmt, chunk_rows):
        if len(chunk):
            yield chunk.assign(**{ROW: chunk.index.to_numpy(dtype=np.int64)})


class ChunkActor:
    """One Ray actor: loads the artifact(s) and the backbone once, then predicts each block with `ChunkPredictor`.

    A PtcliError while loading (wrong backbone, unreadable artifact) is raised on the first block instead: Ray keeps
    only the text of an error raised in an actor's constructor, but passes a task's exception on intact."""

    def __init__(self, artifacts: list[str], device: str, precision: str, model: str | None, text_col: str,
                 text_b_col: str | None, batch_size: int, threads: int) -> None:
        self.failed: PtcliError | None = None
        try:
            self.run = self._load(artifacts, device, precision, model, text_col, text_b_col, batch_size, threads)
        except PtcliError as e:
            self.failed = e

    @staticmethod
    def _load(artifacts: list[str], device: str, precision: str, model: str | None, text_col: str,
              text_b_col: str | None, batch_size: int, threads: int) -> Any:
        import torch
        import transformers

        from ptcli import ensemble
        from ptcli.predict import ChunkPredictor

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        transformers.utils.logging.set_verbosity_error()  # as the CLI does; warnings from ptcli still come through
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        return ChunkPredictor(ensemble.load(artifacts, device, precision, model), text_col, text_b_col, batch_size)

    def __call__(self, block: pd.DataFrame) -> pd.DataFrame:
        if self.failed is not None:
            raise self.failed
        rows = block.pop(ROW).to_numpy()
        block.index = pd.Index(rows)  # so an error names the input's rows, as in a single process
        out = self.run(block)
        out[ROW] = rows
        return out.reset_index(drop=True)


@dataclass
class RayRun:
    args: PredictArgs
    text_col: str
    text_b_col: str | None
    chunk_rows: int
    labels: list[str]

    def predict(self, first: pd.DataFrame, rest: Iterator[pd.DataFrame]) -> Outputs:
        """Output frames in input order. `first` (already read, to check the columns) is read again by Ray."""
        ray = import_ray()
        if self.args.workers < 1:
            raise UsageError(f"--workers {self.args.workers}: must be at least 1")
        if ROW in first.columns:
            raise PtcliError(f"{self.args.input}: has a column {ROW!r}, which --ray uses itself; rename it")
        if not stat.S_ISREG(os.stat(self.args.input).st_mode):
            raise PtcliError(f"{self.args.input}: --ray reads INPUT in a Ray task, which cannot share a pipe; save "
                             "the rows to a file first")
        getattr(rest, "close", lambda: None)()
        if not len(first):  # a header and no rows: nothing for Ray to do
            from ptcli.predict import output_columns

            empty = output_columns(first, self.labels, np.zeros((0, len(self.labels))))
            return lambda on_batch: iter([empty])
        return partial(self._outputs, ray)

    def _outputs(self, ray: Any, on_batch: Callable[[int], None]) -> Iterator[pd.DataFrame]:
        started = connect(ray, self.args.ray or None)
        try:
            check_cpus(ray, self.args.workers, self.args.threads)
            expected = 0
            for out in self._dataset(ray).iter_batches(batch_format="pandas", batch_size=None):
                rows = out.pop(ROW).to_numpy()
                if rows[0] != expected or rows[-1] != expected + len(rows) - 1:
                    raise PtcliError(f"Ray returned rows {rows[0]}…{rows[-1]} where row {expected} was due; nothing "
                                     "was written (please report this)")
                expected += len(rows)
                on_batch(len(rows))
                yield out
        except Exception as e:
            raise user_error(e) or e from None
        finally:
            if started:
                ray.shutdown()

    def _dataset(self, ray: Any) -> Any:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False  # predict's own progress bar counts the rows that come back
        ctx.raise_original_map_exception = True  # a PtcliError from an actor, not Ray's UserCodeException around it
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # not a status report every 10 s on stderr
        # Ray sees one read task and warns that N actors get one input; the task streams a block per chunk.
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
        client = ray.util.client.ray.is_connected()
        block_rows = min(self.chunk_rows, BLOCK_ROWS)
        source = TableSource(Path(self.args.input).resolve(), self.args.format, block_rows, local=not client)
        args = self.args
        actor = {"artifacts": [str(p.resolve()) for p in as_paths(args.artifact)], "device": args.device,
                 "precision": args.precision, "model": args.model, "text_col": self.text_col,
                 "text_b_col": self.text_b_col, "batch_size": args.batch_size, "threads": args.threads}
        # One block per chunk: without override_num_blocks Ray would split each chunk into ~200 tiny blocks.
        return ray.data.read_datasource(source, num_cpus=0, override_num_blocks=1).map_batches(
            ChunkActor, fn_constructor_kwargs=actor, compute=ray.data.ActorPoolStrategy(size=args.workers),
            num_cpus=args.threads,
            num_gpus=1 if args.device == "cuda" else 0, batch_size=None, batch_format="pandas",
            udf_modifying_row_count=False)


def connect(ray: Any, address: str | None) -> bool:
    """Join `address` (None: $RAY_ADDRESS, or a new local Ray); True when this call started the connection. A Ray
    already initialised in this process (tests, notebooks) is used as it is."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise PtcliError(f"--ray {address or ''}: cannot start or reach {where} ({_first_line(e)}); start one with "
                         "`ray start --head`, or pass --ray with no address to run Ray on this machine") from None
    return True


def check_cpus(ray: Any, workers: int, threads: int) -> None:
    cpus = ray.cluster_resources().get("CPU", 0)
    if workers * threads > cpus:
        raise UsageError(f"--workers {workers} × --threads {threads} needs {workers * threads} CPUs, but the Ray "
                         f"cluster has {cpus:g}; lower --workers or --threads, or add nodes")


def user_error(e: BaseException) -> PtcliError | None:
    """The PtcliError a Ray task or actor raised, however Ray wrapped it (RayTaskError, UserCodeException…)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, PtcliError) and hasattr(cur, "message"):
            return PtcliError(cur.message, cur.exit_code)
        todo.extend([cur.__cause__, cur.__context__, getattr(cur, "cause", None)])
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
