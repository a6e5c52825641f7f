"""AffectNet: ``Manually_Annotated_Images/`` with ``Manually_Annotated_file_lists/
{training,validation}.csv`` (``subDirectory_filePath, face_x, face_y, face_width, face_height,
facial_landmarks, expression, ...``; expression 0..7 = neutral, happiness, sadness, surprise,
fear, disgust, anger, contempt; 8..10 are not expressions). Classes the manifest does not name
(contempt for AffectNet-7, 8..10 always) are excluded and counted, not listed as problems."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, csv_rows, sanitise_key

EXPRESSIONS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
NON_EXPRESSIONS = {8: "none", 9: "uncertain", 10: "no-face"}
COLUMNS = {"subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"}


def list_affectnet(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    images = root / opts.get("images_dir", "Manually_Annotated_Images")
    lists = root / opts.get("lists_dir", "Manually_Annotated_file_lists")
    use_box = bool(opts.get("crop_to_face_box", True))
    result = AdapterResult(
        layout="official", label_base=0, paths={"lists": lists.relative_to(root).as_posix(), "images": images.relative_to(root).as_posix()}
    )
    for partition in manifest.partitions:
        path = lists / f"{partition}.csv"
        if not path.is_file():
            raise ManifestError(f"official list missing: {path}")
        reader = csv_rows(path)
        missing = COLUMNS - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}: missing column(s) {sorted(missing)}")
        for i, row in enumerate(reader, start=2):
            try:
                expression = int(row["expression"])
                box = tuple(float(row[c]) for c in ("face_x", "face_y", "face_width", "face_height"))
            except (TypeError, ValueError):
                result.bad_row(f"{path}:{i}", f"bad row {dict(row)}")
                continue
            name = EXPRESSIONS[expression] if 0 <= expression < len(EXPRESSIONS) else NON_EXPRESSIONS.get(expression)
            if name is None:
                result.bad_row(f"{path}:{i}", f"expression {expression} is not 0..10")
                continue
            if name not in manifest.classes:
                result.excluded[f"expression {name}"] += 1
                continue
            rel = row["subDirectory_filePath"]
            result.add(
                RawSample(
                    sanitise_key(Path(rel).with_suffix("").as_posix()),
                    images / rel,
                    "image",
                    manifest.classes.index(name),
                    partition,
                    rel,
                    box if use_box else None,
                )
            )
    return result
