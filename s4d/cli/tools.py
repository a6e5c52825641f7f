"""Tool commands: ``s4d doctor`` (is this installation sound?) and ``s4d demo`` (the whole
system on a generated dataset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .main import app, one_line_errors
from .options import EpochsOpt, SeedOpt


@app.command("doctor")
def doctor_cmd(
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON list of {name, status, detail} instead of rows.")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda[:N]")] = "auto",
    debug: Annotated[bool, typer.Option(help="Keep the traceback of a failed check in its detail.")] = False,
) -> None:
    """Check this installation: environment, shards, DALI decoding on CPU and GPU, GPU
    augmentation, MoAE kernels, attention, host syncs, the process group, and one short
    fine-tuning and MAE epoch. GPU checks say "skipped" without CUDA. Exit 1 if any check fails."""
    from ..doctor import run_checks
    from ..doctor.checks import CHECKS
    from ..runtime import resolve_device

    with one_line_errors():
        dev = resolve_device(device)

    def row(r) -> None:
        if not json_:
            figures = ", ".join(f"{k} {v}" for k, v in r.detail.items() if k != "traceback")
            typer.echo(f"{r.name:<30} {r.status:<10} {figures}" if r.status == "ok" else f"{r.name:<30} {r.status}")
            if "traceback" in r.detail:
                typer.echo(r.detail["traceback"], err=True)

    results = run_checks(CHECKS, dev, on_result=row, debug=debug)
    if json_:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2, default=str))
    failed = [r.name for r in results if r.failed]
    if not json_:
        typer.echo(f"{len(results) - len(failed)} of {len(results)} checks did not fail" + (f"; failed: {', '.join(failed)}" if failed else ""))
    raise typer.Exit(1 if failed else 0)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Work folder for the generated data and runs.")] = Path("demo"),
    epochs: EpochsOpt = 60,
    seed: SeedOpt = 0,
) -> None:
    """The whole system on a generated face-expression dataset (shards, pretrain, train, eval)."""
    from ..demo.run import run_demo

    with one_line_errors():
        summary = run_demo(out, epochs=epochs, seed=seed, log=typer.echo)
    run = out / "runs" / "train"
    ckpt = summary["checkpoint"]
    order = summary["analysis"]["frame_order"]
    pair = ("happy_onset", "happy_offset")
    typer.echo(
        f"\ndemo finished in {summary['seconds']:.0f} s: test UAR {100 * summary['uar']:.1f}%  WAR {100 * summary['war']:.1f}% "
        f"(4 classes, chance 25%)"
    )
    typer.echo(
        "frame order matters: recall of "
        + ", ".join(f"{c} {100 * order['recall'][c]:.0f}% -> {100 * order['recall_shuffled'][c]:.0f}%" for c in pair)
        + " with the frames shuffled"
    )
    pred = summary["timeline"]["prediction"]
    typer.echo(f"predict on a new face acting all four (demo/story.webm): {pred['class']} {pred['probability']:.2f} overall")
    typer.echo("plots:")
    for path in (
        run / "confusion.png",
        run / "recall.png",
        summary["timeline"]["plot"],
        summary["analysis"]["experts"]["plot"],
        summary["analysis"]["relevance"]["plot"],
    ):
        typer.echo(f"  {path}")
    typer.echo("try next:")
    typer.echo(f"  s4d predict {summary['timeline']['video']} -c {ckpt} --no-align --hop 2 --plot story.png --out story.csv")
    typer.echo(f"  s4d eval -m {out}/manifests/demo_videos.json -c {ckpt} --data-root {out}/data --task image   # the image head on clips")
    typer.echo(f"  s4d analyze experts -m {out}/manifests/demo_videos.json -c {ckpt} --data-root {out}/data")
    typer.echo(f"  s4d inspect {out}/data/demo_videos")
