"""Recipe commands: ``s4d recipe list|show|run`` (the paper's experiments, as data in
``s4d/recipes/tables``) and ``s4d report`` (a recipe's runs beside the paper's numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .main import app, one_line_errors
from .options import DataRootOpt, without

recipe_app = typer.Typer(no_args_is_help=True, help="The paper's experiments (Tables IV-VIII, Fig. 3) as named recipes.")
app.add_typer(recipe_app, name="recipe")

NameArg = Annotated[str, typer.Argument(help="Recipe name (s4d recipe list).")]
RManifestOpt = Annotated[str, typer.Option("--manifest", "-m", help="Video manifest the rows fine-tune on (name in manifests/ or path).")]
RFoldOpt = Annotated[Optional[str], typer.Option(help="Fold (the paper's ablations use one DFEW fold; fold 1 by default).")]
SeedsOpt = Annotated[int, typer.Option(min=1, help="Seeds per row (0..N-1): the report's mean ± std.")]
RSizeOpt = Annotated[str, typer.Option(help="Model size: debug | small | base (the paper's).")]
REpochsOpt = Annotated[Optional[int], typer.Option(min=1, help="Epochs of every step (default: each command's own, the paper's 100).")]
RootOpt = Annotated[Path, typer.Option("--out", "-o", help="Root of the recipe folders: <out>/<recipe>/<row>/seed_<s>/.")]
PretrainedOpt = Annotated[
    Optional[str], typer.Option(help="The dual-modal pre-trained checkpoint the fine-tuning rows start from (default: none, from scratch).")
]
MixtureOpt = Annotated[str, typer.Option(help="Pre-training mixture of the rows that pre-train (Table IV, Fig. 3c).")]
VideoMAEOpt = Annotated[Optional[str], typer.Option(help="VideoMAE's VoxCeleb2 checkpoint (Table VII row 'none').")]


def _options(manifest, fold, seeds, size, epochs, data_root, out, pretrained, init_videomae, mixture, rows=None):
    from ..recipes import RunOptions

    return RunOptions(
        manifest=manifest,
        fold=fold,
        seeds=seeds,
        size=size,
        epochs=epochs,
        data_root=str(data_root) if data_root else None,
        out=str(out),
        pretrained=pretrained,
        init_videomae=init_videomae,
        mixture=mixture,
        rows=tuple(r.strip() for r in rows.split(",") if r.strip()) if rows else (),
    )


@recipe_app.command("list")
def list_cmd() -> None:
    """Every recipe: name, rows, title."""
    from ..recipes import all_recipes

    with one_line_errors():
        recipes = all_recipes()
    for r in recipes.values():
        typer.echo(f"{r.name:<8} {len(r.rows):>2} rows  {r.title}")


@recipe_app.command("run")
def run_cmd(
    name: NameArg,
    manifest: RManifestOpt = "dfew",
    fold: RFoldOpt = "1",
    seeds: SeedsOpt = 1,
    size: RSizeOpt = "base",
    epochs: REpochsOpt = None,
    data_root: DataRootOpt = None,
    out: RootOpt = Path("runs"),
    pretrained: PretrainedOpt = None,
    init_videomae: VideoMAEOpt = None,
    mixture: MixtureOpt = "pretrain",
    rows: Annotated[Optional[str], typer.Option(help="Only these rows, comma-separated (default: all).")] = None,
    part: Annotated[Optional[str], typer.Option(help="i/n: every n-th (row, seed) from the i-th; auto: this SLURM array task's share.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the commands, one per line, and run nothing.")] = False,
) -> None:
    """Run the rows into <out>/<recipe>/<row>/seed_<s>/: finished ones skipped, interrupted ones
    resumed (re-run the same command); exit 1 naming the rows that failed."""
    from ..recipes import get_recipe
    from ..recipes.runner import run_recipe

    with one_line_errors():
        recipe = get_recipe(name)
        opts = _options(manifest, fold, seeds, size, epochs, data_root, out, pretrained, init_videomae, mixture, rows)
        failed = run_recipe(recipe, opts, part=part, dry_run=dry_run, log=typer.echo)
    if failed:
        raise typer.Exit(1)


@recipe_app.command("show")
@without(run_cmd, "rows", "part", "dry_run")
def show_cmd(name: str, **options) -> None:
    """Each row as the exact s4d command(s) it runs, with the paper's values."""
    from ..recipes import get_recipe, row_commands, shell_line

    with one_line_errors():
        recipe = get_recipe(name)
        opts = _options(**options)
    typer.echo(f"{recipe.title}  [{recipe.source}; protocol: {recipe.select}]")
    if recipe.note:
        typer.echo(recipe.note)
    for row in recipe.rows:
        paper = ", ".join(f"{ds} {v['uar']:.2f}/{v['war']:.2f}" for ds, v in row.paper.items()) or "not printed"
        typer.echo(f"\n{row.name}: {row.label}  (paper UAR/WAR: {paper})")
        for seed in range(opts.seeds):
            for args in row_commands(recipe, row, seed, opts, strict=False):
                typer.echo(f"  {shell_line(args)}")


@app.command("report")
def report_cmd(
    folder: Annotated[Path, typer.Argument(help="A recipe's folder: runs/<recipe>.")],
    recipe: Annotated[Optional[str], typer.Option(help="Recipe name (default: the one the folder was run with, else its name).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset whose paper values to compare (default: the manifest it was run on).")] = None,
) -> None:
    """report.md, report.csv and report.png: each row's UAR/WAR (mean ± std over seeds) beside the paper's."""
    from ..recipes.report import write_report

    with one_line_errors():
        paths = write_report(folder, recipe, dataset)
    typer.echo(f"report in {paths['md']}, {paths['csv']}, {paths['png']}")
