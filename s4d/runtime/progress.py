"""What a run shows while it runs: the CPUs it sized itself to (once, at the start) and the
progress bar of an epoch (rich, on stderr)."""

from __future__ import annotations


def progress(items, total: int, description: str, show: bool):
    """Iterate with a progress bar (steps, steps/s, ETA) on stderr; plain iteration if not shown."""
    if not show:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.2f} steps/s" if task.speed else "")

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def size_to_machine(loader) -> str:
    """Fit torch's threads to the cores per process; one line for the start of a run: the cores
    and why, torch's threads, the loader's threads."""
    from preprocess.machine import cpus_per_process

    from .device import fit_torch_threads

    cores, why = cpus_per_process()
    torch_threads = fit_torch_threads(cores)
    threads = f", {loader.threads} DALI threads" if loader.backend == "dali" else ""
    return f"CPUs: {cores} per process ({why}); {torch_threads}; {loader.backend} loader{threads}"
