"""What ``mrvae enhance`` shows of a batch while it runs and at the end: a progress bar (and a
bar per video), a line per problem, the JSON-lines manifest, the summary and the exit status."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from mrvae.apps.terminal import console, fail

if TYPE_CHECKING:
    from mrvae.engine.jobs import Job, JobResult


class FrameBars:
    """A bar per video being enhanced, with frames/s, inside the batch's progress display
    (which :func:`report_batch` attaches); called with the source, frames done and expected."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.tasks: dict[str, tuple[Any, float]] = {}  # video -> (its bar, start time)

    def __call__(self, src: Path, done: int, total: int | None) -> None:
        if self.bar is None:
            return
        if str(src) not in self.tasks:
            self.tasks[str(src)] = (self.bar.add_task(f"  {src.name}", total=total, speed=""),
                                    time.perf_counter())
        task, started = self.tasks[str(src)]
        rate = done / max(time.perf_counter() - started, 1e-9)
        self.bar.update(task, completed=done, total=total, speed=f"{rate:.2f} frames/s")

    def finish(self, source: str) -> None:
        if source in self.tasks:
            self.bar.remove_task(self.tasks.pop(source)[0])


def report_batch(results: Iterator[JobResult], jobs: list[Job], failures: list[JobResult],
                 progress: bool, manifest: Path | None, frames: FrameBars | None = None
                 ) -> None:
    """Consume a batch's results (either engine): a progress bar (and ``frames``' bars) and a
    line per problem while it runs, a JSON line per input in ``manifest``, then the summary and
    the exit status."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    for failure in failures:
        console.print(f"[red]error:[/red] {escape(failure.message)}", highlight=False,
                      soft_wrap=True)
    outputs = {str(job.src): job.dst for job in jobs}
    all_results = list(failures)
    with contextlib.ExitStack() as stack:
        log = None
        if manifest is not None:
            from mrvae.engine.cluster import manifest_line

            try:
                manifest.parent.mkdir(parents=True, exist_ok=True)
                log = stack.enter_context(manifest.open("w", encoding="utf-8"))
            except OSError as exc:
                raise fail(f"{manifest}: cannot write the manifest "
                           f"({exc.strerror or exc})") from None
            log.writelines(manifest_line(failure, None) + "\n" for failure in failures)
        bar = stack.enter_context(Progress(
            "{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}"), console=console, transient=True,
            disable=not progress or not jobs))
        task = bar.add_task("enhancing", total=len(jobs), speed="")
        if frames is not None:
            frames.bar = bar
        start = time.perf_counter()
        for result in results:
            if frames is not None:
                frames.finish(result.source)
            if log is not None:  # line by line: an interrupted run keeps its record
                log.write(manifest_line(result, outputs.get(result.source)) + "\n")
                log.flush()
            if result.status != "done":
                level = "[red]error:[/red]" if result.status == "failed" else "skipped:"
                bar.console.print(f"{level} {escape(result.message)}", highlight=False,
                                  soft_wrap=True)
            all_results.append(result)
            bar.advance(task)
    counts = {s: sum(r.status == s for r in all_results) for s in ("done", "skipped", "failed")}
    megapixels = sum(r.megapixels for r in all_results)
    elapsed = time.perf_counter() - start
    if len(all_results) > 1 or counts["done"]:
        speed = f", {elapsed / megapixels:.2f} s/MP" if megapixels else ""
        console.print(f"done {counts['done']}, skipped {counts['skipped']}, failed "
                      f"{counts['failed']} in {elapsed:.1f} s, "
                      f"{counts['done'] / elapsed:.2f} images/s{speed}", highlight=False)
        for result in all_results:
            if result.status == "failed":
                console.print(f"  failed: {escape(result.message)}", highlight=False,
                              soft_wrap=True)
    # A batch whose outputs all exist is a finished job (a rerun resumes); one input whose
    # output exists was not enhanced.
    resumed = counts["skipped"] and len(all_results) > 1
    if counts["failed"] or not (counts["done"] or resumed):
        raise typer.Exit(1)
