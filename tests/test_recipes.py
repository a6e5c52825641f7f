"""The paper's experiments as recipes: the registry's data, ``s4d recipe list|show|run`` through
the real CLI (dry runs, the skip of finished units, a failed unit named), every row's command
accepted by the CLI's own parser, and ``s4d report`` on a synthetic runs/<recipe> tree."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from preprocess.errors import InputError
from s4d.recipes import RunOptions, all_recipes, get_recipe, row_commands
from s4d.recipes.registry import _read

from .test_bad_inputs import one_error_line, s4d


def cli(*args) -> tuple[int, str, str]:
    """The real ``s4d`` app in this process (typer's runner: importing torch once, not per
    call); ``s4d`` (a subprocess) where a command starts its own."""
    from typer.testing import CliRunner

    from s4d.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


ROWS = {"table4": 5, "table5": 4, "table6": 3, "table7": 4, "table8": 4, "fig3a": 4, "fig3b": 6, "fig3c": 5, "fig3d": 5}


def test_the_registry_holds_every_table_and_figure_with_the_papers_values():
    recipes = all_recipes()
    assert {n: len(r.rows) for n, r in recipes.items()} == ROWS
    assert get_recipe("table8").row("later").paper["dfew"] == {"uar": 70.58, "war": 79.37}
    assert get_recipe("table4").row("images").paper_cost == {"tflops": 8.8e4}
    assert get_recipe("table5").row("vit-moe").paper_cost == {"params_test": 115, "params_train": 285}
    assert get_recipe("table6").select == "test"  # the per-task best epoch
    for name, r in recipes.items():
        if name.startswith("table"):
            assert all(row.paper for row in r.rows), name
        else:  # Fig. 3: values not printed, only the points DESIGN ties to a table row
            assert r.sweep and sum(bool(row.paper) for row in r.rows) in (1, 2), name
    assert [row.x for row in recipes["fig3a"].rows] == [2, 4, 8, 16]


def test_a_broken_recipe_file_is_one_line_naming_it(tmp_path):
    bad = json.loads((Path(__file__).parents[1] / "s4d/recipes/tables/table8.json").read_text())
    bad["rows"][0]["steps"][0]["command"] = "evaluate"
    (tmp_path / "table8.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"table8\.json: step command must be one of train, pretrain"):
        _read(tmp_path / "table8.json")


def test_list_show_and_dry_run_through_the_cli(tmp_path):
    rc, out, err = cli("recipe", "list")
    assert rc == 0, err
    assert [ln.split()[:2] for ln in out.splitlines()] == [[n, str(c)] for n, c in ROWS.items()]
    rc, out, err = cli("recipe", "show", "table8", "--size", "debug", "--seeds", "2", "--pretrained", "enc.pt")
    assert rc == 0, err
    cmds = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("s4d ")]
    assert len(cmds) == 8 and "--moae-position early" in cmds[0] and "--init enc.pt" in cmds[0]
    assert "later  (paper UAR/WAR: ferv39k 43.41/53.65, dfew 70.58/79.37)" in out
    rc, out, err = cli("recipe", "run", "table4", "--dry-run", "--epochs", "1", "--out", tmp_path, "--seeds", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 * (1 + 2 * 4) and all(ln.startswith("s4d ") for ln in lines)  # row #1: train only; #2-#5: pretrain + train
    pre = f"{tmp_path}/table4/frames/pretrain_seed_1"
    assert f"s4d pretrain -m pretrain --modality frames --size base --seed 1 --epochs 1 --out {pre}" in lines
    assert any(ln.endswith(f"--init {pre}/checkpoints/last.safetensors --out {tmp_path}/table4/frames/seed_1") for ln in lines)
    rc, part, err = cli("recipe", "run", "table4", "--dry-run", "--epochs", "1", "--out", tmp_path, "--seeds", "2", "--part", "1/3")
    assert rc == 0 and set(part.splitlines()) < set(lines) and "seed_1" in part.splitlines()[0]  # units 1, 4, 7
    assert not (tmp_path / "table4").exists()  # a dry run writes nothing
    rc, out, err = cli("recipe", "run", "table8", "--dry-run", "--rows", "early,later", "--seeds", "2", "--fold", "3")
    assert rc == 0 and [ln.split("--moae-position ")[1].split()[0] for ln in out.splitlines()] == ["early", "early", "later", "later"]
    assert all("-m dfew --fold 3 " in ln for ln in out.splitlines())
    rc, _, err = cli("recipe", "run", "table8", "--dry-run", "--rows", "first")
    assert rc == 2 and "recipe table8 has no row 'first'" in one_error_line(err)
    rc, _, err = cli("recipe", "run", "table7", "--dry-run")
    assert rc == 2 and "--init-videomae" in one_error_line(err)
    rc, _, err = cli("recipe", "run", "table9")
    assert rc == 2 and "no recipe 'table9'" in one_error_line(err)


def test_run_skips_finished_units_and_names_the_failed_ones(tmp_path):
    done = tmp_path / "table8" / "early" / "seed_0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    # --part 0/2: units early (finished) and later (fails: the manifest does not exist)
    rc, out, err = s4d("recipe", "run", "table8", "-m", "no-such-manifest", "--size", "debug", "--out", tmp_path, "--part", "0/2")
    assert rc == 1
    assert "early/seed_0: done" in out and "failed: later/seed_0" in out and "middle/seed" not in out
    assert json.loads((tmp_path / "table8" / "recipe.json").read_text())["manifest"] == "no-such-manifest"
    rc, _, err = s4d("recipe", "run", "table8", "-m", "dfew", "--size", "debug", "--out", tmp_path, "--part", "0/2")
    assert rc == 2 and "other options (manifest 'no-such-manifest' -> 'dfew')" in one_error_line(err)


def test_every_rows_command_parses_with_the_clis_own_parser():
    """Each command of every row, as ``recipe show/run`` prints it, is accepted by the parser of
    ``s4d`` itself (typer's click command: ``make_context`` parses, runs nothing) and its values
    by the command's typed config (built as the command builds it, validating itself)."""
    import typer

    from s4d.cli import app
    from s4d.cli.from_config import config_from_options
    from s4d.train.config import PretrainConfig, TrainConfig

    group = typer.main.get_command(app)
    opts = RunOptions(
        seeds=1, size="base", epochs=2, data_root="data", pretrained="enc.pt", init_videomae="videomae.pth"
    )  # the paper's size: Fig. 3b needs 12 blocks
    refused = []
    for recipe in all_recipes().values():
        for row in recipe.rows:
            for args in row_commands(recipe, row, 0, opts):
                ctx = group.make_context("s4d", list(args), resilient_parsing=False)
                sub = group.get_command(ctx, args[0])
                try:
                    params = sub.make_context(args[0], list(args[1:]), parent=ctx).params
                    config_from_options(TrainConfig if args[0] == "train" else PretrainConfig, params, lambda values: Path("unused"))
                except Exception as err:  # click.UsageError: a flag the command lacks; InputError: a value its config refuses
                    refused.append(f"{recipe.name}/{row.name}: {' '.join(args)}: {err}")
    assert not refused, "\n".join(refused)


def _summary(uar: float, war: float, select: str = "last", cost: dict | None = None) -> dict:
    s = {"fold": "1", "select": select, "epoch": 1, "selected_on": "last", "uar": uar - 0.1, "war": war - 0.1, "count": 10}
    s["selected"] = {"epoch": 0, "selected_on": "test-selected", "uar": uar, "war": war} if select != "last" else {"epoch": 1}
    if select == "last":
        s["uar"], s["war"] = uar, war
    if cost:
        s["cost"] = cost
    return s


def test_report_sets_two_rows_over_two_seeds_beside_the_paper(tmp_path):
    root = tmp_path / "table8"
    values = {"early": [(0.60, 0.78), (0.62, 0.78)], "later": [(0.70, 0.79), (0.64, 0.79)]}
    for row, seeds in values.items():
        for s, (uar, war) in enumerate(seeds):
            (root / row / f"seed_{s}").mkdir(parents=True)
            cost = {"tflops": 10.0 + s, "params_test": 90_000_000, "params_train": 101_000_000}
            (root / row / f"seed_{s}" / "summary.json").write_text(json.dumps(_summary(uar, war, cost=cost)))
    rc, out, err = cli("report", root)
    assert rc == 0, err
    rows = {r["row"]: r for r in csv.DictReader((root / "report.csv").open())}
    assert set(rows) == {"early", "middle", "later", "alternate"}
    early, later = rows["early"], rows["later"]
    assert float(early["uar_mean"]) == pytest.approx(61.0) and float(early["uar_std"]) == pytest.approx(math.sqrt(2))
    assert float(later["uar_mean"]) == pytest.approx(67.0) and float(later["uar_std"]) == pytest.approx(math.sqrt(18))
    assert float(early["paper_uar"]) == 67.93 and float(later["paper_war"]) == 79.37 and early["dataset"] == "dfew"
    assert float(later["diff_uar"]) == pytest.approx(67.0 - 70.58) and later["protocol"] == "last" and later["seeds"] == "2"
    # the paper's UAR gap (2.65) is inside the seed spread (1.41 + 4.24); WAR spreads are 0: not flagged
    assert early["in_noise_uar"] == "later" and later["in_noise_uar"] == "early" and not early["in_noise_war"]
    assert not early["reversed_uar"] and rows["middle"]["seeds"] == "0" and not rows["middle"]["in_noise_uar"]
    assert float(early["tflops"]) == pytest.approx(10.5) and float(early["params_test_m"]) == pytest.approx(90.0)
    md = (root / "report.md").read_text()
    assert "61.00 ± 1.41" in md and "67.93" in md and "inside seed spread" in md
    assert (root / "report.png").stat().st_size > 1000


def test_report_uses_the_selected_block_of_a_test_selected_run(tmp_path):
    root = tmp_path / "runs" / "table6"
    (root / "joint" / "seed_0").mkdir(parents=True)
    (root / "joint" / "seed_0" / "summary.json").write_text(json.dumps(_summary(0.43, 0.53, select="test")))
    rc, _, err = cli("report", root, "--dataset", "ferv39k")
    assert rc == 0, err
    joint = next(r for r in csv.DictReader((root / "report.csv").open()) if r["row"] == "joint")
    assert joint["protocol"] == "test-selected" and float(joint["uar_mean"]) == pytest.approx(43.0) and joint["uar_std"] == ""
    assert float(joint["paper_uar"]) == 43.41 and joint["dataset"] == "ferv39k"
    rc, _, err = cli("report", tmp_path / "empty")
    assert rc == 2 and "no such folder" in one_error_line(err)


def test_a_recipe_runs_end_to_end_with_a_kill_and_resume_and_the_report_holds_its_seeds(tmp_path):
    """Table VIII's rows early and later, two seeds, at --size debug on a generated task: the
    runner is killed (SIGTERM to its process group, as SLURM does) in the middle of a unit, the
    same command resumes it and finishes the rest, and ``s4d report`` sets both rows' seed
    spread beside the paper's DFEW values in report.csv."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .test_bad_inputs import ROOT
    from .test_train import make_colour_task

    m, shards = make_colour_task(tmp_path / "task")
    data = tmp_path / "data"
    shards.rename(data.mkdir() or data / "colour")
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    args = [sys.executable, "-m", "s4d", "recipe", "run", "table8", "-m", tmp_path / "colour.json", "--fold", "main", "--rows", "early,later"]
    args += ["--seeds", "2", "--size", "debug", "--epochs", "2", "--data-root", data, "--out", tmp_path / "runs"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    root = tmp_path / "runs" / "table8"
    first = subprocess.Popen([str(a) for a in args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    mid_unit = root / "early" / "seed_1" / "metrics.jsonl"  # the second unit, after its first epoch
    deadline = time.monotonic() + 240
    while not (mid_unit.is_file() and mid_unit.read_text().count("\n") >= 1) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, f"the runner ended before the kill point:\n{first.communicate()[0]}"
    os.killpg(first.pid, signal.SIGTERM)
    first.wait(timeout=120)
    assert (root / "early" / "seed_0" / "summary.json").is_file() and not (root / "early" / "seed_1" / "summary.json").exists()

    again = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    said = again.stdout + again.stderr
    assert "early/seed_0: done" in said and "resuming from epoch" in said, said  # the killed unit resumed, not restarted
    assert all((root / row / f"seed_{s}" / "summary.json").is_file() for row in ("early", "later") for s in (0, 1))

    rc, out, err = s4d("report", root, "--dataset", "dfew")
    assert rc == 0, err
    rows = {r["row"]: r for r in csv.DictReader((root / "report.csv").open())}
    for name, paper in (("early", 67.93), ("later", 70.58)):
        row = rows[name]
        assert row["seeds"] == "2" and row["protocol"] == "last" and float(row["paper_uar"]) == paper
        assert math.isfinite(float(row["uar_mean"])) and float(row["uar_std"]) >= 0 and row["diff_uar"] != ""
