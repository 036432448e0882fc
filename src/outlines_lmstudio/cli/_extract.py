"""``outlines-lmstudio extract``: a JSONL pipeline of validated structured outputs."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    MAX_RETRIES,
    CliError,
    ModelInfo,
    add_model_option,
    add_sampling_options,
    check_retries,
    connect,
    err_console,
    error_exit_code,
    error_message,
    file_path,
    resolve_llm,
    sampling_kwargs,
    stderr_is_a_terminal,
    system_prompt,
)
from ._generate import build_input
from ._images import load_image
from ._jsonl import NO_LOCK_NOTE, STDIN, Item, OutputFile, item_key, locks, read_items
from ._output_types import (
    OutputSpec,
    add_output_options,
    check_output_type,
    output_spec,
    to_json,
    type_code_error,
)
from ._sigterm import hold, stopped_by
from ._text import check_options_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from rich.console import Console
    from rich.progress import Task
    from rich.text import Text

    from outlines_lmstudio import LMStudio

__all__ = ["HELP", "MAX_CONCURRENCY", "add_arguments", "progress_display", "run"]

MAX_CONCURRENCY = 64
"""Most items ``--concurrency`` puts in flight (one thread and one prediction each)."""

HELP = "Extract validated JSON for each line of a JSONL file (concurrent, resumable)."
DESCRIPTION = """\
For each input line {"id": ..., "prompt": "...", "images": ["a.png"]} ask the model
for an object following --schema (or --type) and append {"id": ..., "result": {...}}
or {"id": ..., "error": {"type": ..., "message": ...}} to the output, one complete
line per finished item, in the order items finish. Run the same command again to
resume: ids already in the output are skipped (add --retry-errors to redo the failed
ones). Image paths are relative to the input file (with --input -, which reads
standard input: to the current directory). Only a reasoning model's answer is
parsed; --reasoning also records its thinking as "reasoning". Exit status 1 if an
item of the input failed: in this run, or left as an error line by an earlier one."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``extract`` options to ``parser``."""
    add_output_options(parser, text=False)
    parser.add_argument(
        "--input",
        required=True,
        type=file_path,
        metavar="IN.jsonl",
        help="the items, one per line (- reads standard input)",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=file_path,
        metavar="OUT.jsonl",
        help="results are appended here (an existing file must be an earlier extract output; "
        "- or a pipe: written, never read)",
    )
    add_model_option(parser, "model key (default: a loaded LLM)")
    parser.add_argument(
        "--system", type=system_prompt, metavar="TEXT", help="system prompt for every item"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help=f"items in flight at once (1 to {MAX_CONCURRENCY}; default: %(default)s, LM Studio's "
        "parallel slots)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        metavar="N",
        help=f"re-ask up to N times when a reply does not validate (0 to {MAX_RETRIES}; "
        "default: 1; 0 with --reasoning)",
    )
    parser.add_argument(
        "--reasoning",
        action="store_true",
        help='record a reasoning model\'s thinking on each line as "reasoning" (one reply '
        "per line: not combined with --retries)",
    )
    parser.add_argument(
        "--retry-errors",
        action="store_true",
        help="redo the input's ids whose output lines are errors (those lines are removed first)",
    )
    add_sampling_options(parser)


class _Fatal(Exception):
    """A failure that is not the item's fault (server gone, model gone): stop the run."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(str(cause))


@dataclass
class _Job:
    model: LMStudio
    spec: OutputSpec
    system: str | None
    retries: int
    kwargs: dict[str, Any]
    reasoning: bool = False

    def __call__(self, item: Item) -> dict[str, Any]:
        from outlines_lmstudio.errors import (
            LMStudioConnectionError,
            LMStudioModelNotFoundError,
            LMStudioTimeoutError,
            OutlinesLMStudioError,
            ParseError,
        )

        thought: list[str] = []
        try:
            images = [load_image(path, files_only=True) for path in item.images]
            model_input = build_input(item.prompt, self.system, images)
            if self.reasoning:
                value = self._parse_reply(model_input, thought)
            else:
                value = self.model.parse(
                    model_input, self.spec.output_type, retries=self.retries, **self.kwargs
                )
            result = to_json(value)  # a serializer of the --type class runs here
        except (LMStudioConnectionError, LMStudioModelNotFoundError, LMStudioTimeoutError) as exc:
            # A timeout here is LM Studio silent for the SDK's whole wait (extract sets no
            # time limit of its own): not the item's fault, and every next item would wait
            # it out too (found by a probe: 3 items, 181 s, each an error line to retry).
            raise _Fatal(exc) from exc
        except CliError as exc:
            return {"id": item.id, "error": {"type": "InputError", "message": exc.message}}
        except OutlinesLMStudioError as exc:
            message = error_message(exc, None)
            error: dict[str, Any] = {"type": type(exc).__name__, "message": message}
            if isinstance(exc, ParseError):
                error["raw"] = exc.raw
                error["errors"] = exc.errors
            record = {"id": item.id, "error": error}
            if self.reasoning:
                record["reasoning"] = getattr(exc, "reasoning", None) or "".join(thought)
            return record
        except Exception as exc:
            # The --type class's own code (a validator, a serializer) fails this item, as a
            # reply that does not validate does; anything else is ours, and is raised.
            told = type_code_error(exc, self.spec.output_type)
            if told is None:
                raise
            return {"id": item.id, "error": {"type": type(exc).__name__, "message": told}}
        record = {"id": item.id, "result": result}
        if self.reasoning:
            record["reasoning"] = "".join(thought)
        return record

    def _parse_reply(self, model_input: Any, thought: list[str]) -> Any:
        """Ask once with ``reply`` and validate the answer as ``parse`` does."""
        from outlines_lmstudio._output import plan_output
        from outlines_lmstudio._typed import check_reply, validator_for

        reply = self.model.reply(model_input, self.spec.output_type, **self.kwargs)
        thought.append(reply.reasoning)
        validator = validator_for(plan_output(self.spec.output_type))
        _, value, _ = check_reply(validator, reply.text, reply.stats.stop_reason, 1, True)
        return value


def _count(number: int, noun: str) -> str:
    """``1 result``, ``2 results``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _rate(task: Task) -> float | None:
    """Items finished per second since the run started, or ``None`` before the first.

    Rich's own ``task.speed`` divides by the time between the first and the last item
    finished, so items that finish together (several in flight) read as thousands per
    second; the average since the start is what a user can plan with.
    """
    elapsed = task.finished_time or task.elapsed
    if not task.completed or not elapsed:
        return None
    return task.completed / elapsed


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second, averaged since the start."""

        def render(self, task: Task) -> Text:
            speed = _rate(task)
            return Text("-- items/s" if speed is None else f"{speed:.1f} items/s", style="cyan")

    return RateColumn()


def _eta_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        """Time left at the average rate (``-:--:--`` before the first item)."""

        max_refresh = 0.5

        def render(self, task: Task) -> Text:
            speed = _rate(task)
            if task.finished:
                left: float | None = 0.0
            elif speed is None or task.total is None:
                left = None
            else:
                left = (task.total - task.completed) / speed
            if left is None:
                return Text("-:--:--", style="progress.remaining")
            minutes, seconds = divmod(round(left), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")

    return EtaColumn()


def progress_display(*, disable: bool, console: Console | None = None) -> Any:
    """Return the progress display, its columns fitted to the terminal's width.

    On a narrow terminal rich squeezed every column, so the line lost its item count at 20
    columns and wrapped at 60 (found by a probe). Columns are left out instead, the least
    needed first (the bar shrinks, then the rate and times go): the widest layout whose
    line fits is drawn, measured at each refresh (the counts grow; the terminal may be
    resized; found by a review: widths fixed for 1,000 items cut 1,000,000 to "12345/100…").

    Parameters
    ----------
    disable
        Draw nothing (the results go to the terminal it would be drawn on).
    console
        Where it is drawn: standard error (`err_console`) by default.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table

    name = TextColumn("[bold]extract")
    count = MofNCompleteColumn()
    failed = TextColumn("[red]{task.fields[failed]} failed")
    rate, eta = _rate_column(), _eta_column()
    times = [rate, TimeElapsedColumn(), TextColumn("ETA"), eta]
    layouts: list[tuple[ProgressColumn, ...]] = [
        (name, BarColumn(), count, failed, *times),
        (name, BarColumn(bar_width=10), count, failed, *times),
        (name, count, failed, rate, TextColumn("ETA"), eta),
        (name, count, failed, TextColumn("ETA"), eta),
        (count, failed),
        (count,),
    ]
    err = console or err_console()

    class FittingProgress(Progress):
        def __enter__(self) -> FittingProgress:
            try:
                self.start()
            except BaseException:
                # A Ctrl-C in rich's start (it waits for its refresh thread to begin) left
                # the display drawing, with no __exit__ to stop it (found by a probe). Its
                # stop ends the thread first, then fails on what a start cut short had not
                # set up yet (a render hook to pop): the Ctrl-C is what is raised.
                with contextlib.suppress(Exception):
                    self.stop()
                raise
            return self

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
            if isinstance(exc, BrokenPipeError):  # a quiet stop: no last frame (a probe)
                self.console.quiet = True
            super().__exit__(kind, exc, tb)

        def make_tasks_table(self, tasks: Any) -> Table:
            unbounded = err.options.update_width(1_000_000)  # its width, not the terminal's
            for columns in layouts:  # the last one is drawn even if it does not fit
                self.columns = columns
                table = super().make_tasks_table(tasks)
                if err.measure(table, options=unbounded).maximum <= err.width:
                    break
            return table

    return FittingProgress(*layouts[0], console=err, disable=disable)


def _check_args(args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        raise CliError(f"--concurrency must be at least 1, got {args.concurrency}.")
    if args.concurrency > MAX_CONCURRENCY:
        raise CliError(
            f"--concurrency must be at most {MAX_CONCURRENCY}, got {args.concurrency}: each "
            "item in flight is a thread and a prediction, and LM Studio runs only a few at "
            "once (4 per model by default); more only wait on the server."
        )
    if args.reasoning and args.retries:
        raise CliError(
            "--reasoning records the thinking of one reply per line, so it cannot re-ask: "
            "leave out --retries (or pass --retries 0)."
        )
    if args.retries is None:
        args.retries = 0 if args.reasoning else 1
    check_retries(args.retries)


def run(args: argparse.Namespace) -> int:
    """Run the extraction; return the exit status."""
    _check_args(args)
    check_options_text(args)
    spec = output_spec(args)
    check_output_type(spec, regex_option=False)
    kwargs = sampling_kwargs(args, structured=True)
    items = read_items(args.input)
    with OutputFile(args.output) as output:  # holds the output's lock until the end
        return _run(args, spec, kwargs, items, output)


def _run(
    args: argparse.Namespace,
    spec: OutputSpec,
    kwargs: dict[str, Any],
    items: list[Item],
    output: OutputFile,
) -> int:
    say = err_console()
    note = output.scan(args.input)
    if note:
        say.print(note, style="yellow")
    if not output.stream and not locks():
        say.print(NO_LOCK_NOTE, style="yellow")
    keys = {item_key(item.id) for item in items}
    # Error lines dropped by --retry-errors count as not answered; they are removed from
    # the file only once LM Studio and the model are found (a run that cannot start keeps
    # them: their raw replies and messages are the record of what went wrong).
    if args.retry_errors:
        output.check_rewritable()
    retried = output.failed & keys - output.done if args.retry_errors else set()
    kept_errors = output.failed - retried  # once: per item it made resuming quadratic
    answered = output.done | kept_errors
    pending = [item for item in items if item_key(item.id) not in answered]
    skipped = len(items) - len(pending)
    if not items:
        source = "standard input" if str(args.input) == STDIN else args.input
        say.print(f"Nothing to do: {source} has no items (it is empty or blank).")
        return 0
    errors = sum(item_key(item.id) in kept_errors for item in items)
    redo = "(--retry-errors redoes those)"
    if errors and len(items) == 1:
        as_errors = f", as an error {redo.replace('those', 'it')}"
    else:
        as_errors = f", {errors} of them as errors {redo}" if errors else ""
    if not pending:
        every = "the one id is" if len(items) == 1 else f"all {len(items)} ids are"
        say.print(f"Nothing to do: {every} already in {args.output}{as_errors}.")
        return EXIT_FAILURE if errors else 0
    if skipped:
        say.print(
            f"Skipping {_count(skipped, 'id')} already in {args.output}{as_errors}; "
            f"{len(pending)} to go."
        )
    output.check_writable(rewrite=bool(retried))
    from outlines_lmstudio import from_lmstudio

    with connect(args) as session:
        with_images = [i for i in pending if i.images]

        def usable(info: ModelInfo) -> None:
            if not info.vision:
                raise CliError(
                    f"{len(with_images)} input line(s) have images (first: line "
                    f"{with_images[0].line}), but {info.key!r} has no vision support: pick a "
                    "vision model (`outlines-lmstudio models --capability vision`)."
                )

        info = resolve_llm(session, args.model, usable if with_images else None)
        model = from_lmstudio(session.client, info.name, max_concurrency=args.concurrency)
        job = _Job(model, spec, args.system, args.retries, kwargs, args.reasoning)
        if retried and (dropped := output.drop_errors(retried)):
            say.print(f"Retrying {_count(dropped, 'id')} whose output line was an error.")
        output.open()
        ok, failed, seconds = _process(job, pending, output, args.concurrency)
    if str(args.output) == "-":
        where = "written to standard output"
    else:  # a pipe or a device is written, a file appended to
        where = f"{'written to' if output.stream else 'appended to'} {args.output}"
    say.print(
        f"Done in {seconds:.1f} s: {_count(ok, 'result')} and {_count(failed, 'error')} {where}"
        + (f" ({_count(skipped, 'id')} skipped: already there)." if skipped else ".")
    )
    if errors:  # skipped, still errors: the input is not done
        say.print(
            f"{failed + errors} of the input's {_count(len(items), 'id')} failed: their lines in "
            f"{args.output} are errors ({errors} from an earlier run: --retry-errors redoes them)."
        )
    return EXIT_FAILURE if failed or errors else 0


class _Tally:
    """The records this run appended, each written by the worker that made it.

    Ctrl-C raises ``KeyboardInterrupt`` in the main thread only, so a line written by a
    worker and its count can never be split by it: the main thread once counted a line it
    had just written as unfinished. After :meth:`stop` nothing more is appended, so the
    number told is the number of lines the run added.
    """

    def __init__(self, output: OutputFile) -> None:
        self._output = output
        self._lock = threading.Lock()
        self._open = True
        self.ok = self.failed = 0

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` and count it, unless the run has stopped."""
        with self._lock:
            if not self._open:
                return
            self._output.append(record)
            if "error" in record:
                self.failed += 1
            else:
                self.ok += 1

    def stop(self) -> int:
        """Append nothing more; return how many records were appended."""
        with self._lock:
            self._open = False
            return self.ok + self.failed


def _as_finished(
    running: set[concurrent.futures.Future[None]],
    pool: concurrent.futures.ThreadPoolExecutor,
    run: Callable[[Item], None],
    waiting: Iterator[Item],
) -> Iterator[concurrent.futures.Future[None]]:
    """Yield each future as it finishes, giving the pool the next waiting item for it."""
    while running:
        done, running = concurrent.futures.wait(
            running, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in done:
            item = next(waiting, None)
            if item is not None:
                running.add(pool.submit(run, item))
            yield future


def _process(
    job: _Job, pending: list[Item], output: OutputFile, concurrency: int
) -> tuple[int, int, float]:
    """Run the items concurrently, appending each result as it finishes."""
    start = time.monotonic()
    tally = _Tally(output)

    def run(item: Item) -> None:
        tally.append(job(item))

    pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="extract")
    # Items go to the pool a few at a time: all at once, 2 million of them held 3 GB of
    # futures more than their items (found by a probe).
    waiting = iter(pending)
    try:
        running = {pool.submit(run, item) for item in itertools.islice(waiting, 2 * concurrency)}
        # No bar when the results go to the terminal it is drawn on (`--output -`): written
        # beside it, each line was glued to a frame of it (found by a probe). Standard error
        # elsewhere (a log) gets its last line, as ever.
        with progress_display(disable=output.terminal and stderr_is_a_terminal()) as progress:
            task = progress.add_task("extract", total=len(pending), failed=0)
            try:
                for future in _as_finished(running, pool, run, waiting):
                    try:
                        future.result()
                    except _Fatal as exc:
                        told = error_message(exc.cause, None).rstrip(".")
                        raise CliError(
                            f"{told}. Stopped after {tally.stop()} items; run the same "
                            "command again to resume.",
                            error_exit_code(exc.cause),
                        ) from None
                    except CliError as exc:  # the output cannot be written
                        resume = "" if output.stream else " to resume"  # a stream is not read
                        raise CliError(
                            f"{exc.message} Stopped after {tally.stop()} items; run the same "
                            f"command again{resume} once it can be written.",
                            exc.code,
                        ) from None
                    progress.update(task, advance=1, failed=tally.failed)
            except KeyboardInterrupt:
                # Before the display draws its last frame: a second signal cut that frame
                # mid-line, and the message was written after it, on its line (CI, once).
                hold()
                raise
    except KeyboardInterrupt:
        hold()  # found by a probe: a second signal here lost the count (`timeout` sends two)
        said = stopped_by()
        stopped = said[0].upper() + said[1:]  # the message's first word
        raise CliError(
            f"{stopped}: {tally.stop()} items finished and written to {output.path}; run "
            "the same command again to resume.",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        tally.stop()
        pool.shutdown(wait=False, cancel_futures=True)
    return tally.ok, tally.failed, time.monotonic() - start
