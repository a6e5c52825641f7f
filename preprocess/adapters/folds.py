"""K-fold releases (DFEW, MAFW): a train and a test list per fold. Ours stores each fold's test
set once as a partition and builds train from the other partitions, after checking that this
gives the official train lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

from .base import AdapterResult, Problem, RawSample, Row, locate_splits, option_list, read_rows


def locate_fold_splits(
    root: Path, dataset: str, opts: dict[str, Any], official: tuple[str, ...], authors: tuple[str, ...], partitions: tuple[str, ...]
) -> tuple[str, str, list[tuple[int, str]]]:
    """(form, path template, [(k, partition)]) of a k-fold release with a train and a test list
    per fold, official or in the authors' converted form (``locate_splits``)."""
    forms = {"official": option_list(opts, "official_splits", official, dataset), "authors": option_list(opts, "authors_splits", authors, dataset)}
    folds = list(enumerate(partitions, start=1))
    files = [{"role": role, "k": k} for k, _ in folds for role in ("test", "train")]
    form, template = locate_splits(root, dataset, forms, opts.get("form"), files)
    return form, template, folds


def read_fold_tables(root: Path, template: str, folds: list[tuple[int, str]], result: AdapterResult) -> dict[tuple[str, int], list[Row]]:
    return {(role, k): read_rows(root / template.format(role=role, k=k), result) for k, _ in folds for role in ("test", "train")}


def collect_folds(
    folds: list[tuple[int, str]],
    tables: dict[tuple[str, int], list[Row]],
    dataset: str,
    result: AdapterResult,
    read: Callable[[Row], tuple[str, int] | None],
    sample: Callable[[str, int, str], RawSample],
) -> None:
    """Each fold's test rows become the samples of its partition (``read`` a row into (id,
    label) or None for a bad row, ``sample`` builds it); the train lists are only checked to be
    the other folds' test lists (``check_partition_complement``)."""
    train: dict[str, dict[str, int]] = {}
    test: dict[str, dict[str, int]] = {}
    for k, partition in folds:
        for role, into in (("test", test), ("train", train)):
            into[partition] = {}
            for row in tables[role, k]:
                got = read(row)
                if got is None:
                    continue
                vid, label = got
                into[partition][vid] = label
                if role == "test":
                    result.add(sample(vid, label, partition))
    check_partition_complement(train, test, dataset, result)


def check_partition_complement(train: dict[str, dict[str, Any]], test: dict[str, dict[str, Any]], dataset: str, result: AdapterResult) -> None:
    """Official k-fold releases list train and test per fold; ours stores each test set once and
    builds train from the others. A release where that would change the train sets or a clip's
    label is listed as a release problem (a real run refuses it)."""
    for fold, rows in train.items():
        others = {i: lab for f, ids in test.items() if f != fold for i, lab in ids.items()}
        if set(rows) != set(others):
            extra, lacking = sorted(set(rows) - set(others))[:3], sorted(set(others) - set(rows))[:3]
            result.release_problems.append(
                Problem(
                    f"fold {fold}",
                    (
                        f"{dataset} fold {fold}: official train list differs from the other folds' test lists "
                        f"(only in train: {extra}; only in other tests: {lacking})"
                    ),
                )
            )
        relabelled = sorted(i for i, lab in rows.items() if i in others and others[i] != lab)
        if relabelled:
            result.release_problems.append(
                Problem(
                    f"fold {fold}",
                    (
                        f"{dataset} fold {fold}: {len(relabelled)} clip(s) have another label in the train list than in "
                        f"their test list, e.g. {relabelled[:3]}"
                    ),
                )
            )
    seen: Counter = Counter(i for ids in test.values() for i in ids)
    twice = sorted(i for i, n in seen.items() if n > 1)
    if twice:
        result.release_problems.append(Problem("folds", f"{dataset}: sample(s) in more than one official test set: {twice[:5]}"))
