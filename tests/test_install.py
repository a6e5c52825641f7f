"""``pip install`` without the Makefile: ``python -m build`` makes a wheel and an sdist that
carry the manifests, and the wheel installed into a fresh virtual environment gives a working
``s4d``. The fresh environment reuses this one's installed packages (torch and the rest) through
a path file, so nothing is downloaded (pip included: a venv's own bundled setuptools is older
than torch requires); s4d itself comes only from the wheel."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.test_bad_inputs import ROOT
from tests.test_predict import NAMES, debug_checkpoint

pytest.importorskip("build", reason="python -m build needs the build package (in the test extra)")

SOURCES = ["s4d", "pipelines", "preprocess", "manifests", "pyproject.toml", "README.md"]
MANIFESTS = sorted(p.name for p in (ROOT / "manifests").glob("*.json"))


def _sh(*args, env=None, cwd=None):
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert res.returncode == 0, f"{args}: {res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, sdist) built from a copy of the sources (the repository stays clean)."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(path, src / name)
    _sh(sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", src)
    (wheel,), (sdist,) = (tmp / "dist").glob("*.whl"), (tmp / "dist").glob("*.tar.gz")
    return wheel, sdist


def test_the_wheel_and_the_sdist_carry_the_code_and_the_manifests(built):
    wheel, sdist = built
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).name for n in names if n.startswith("manifests/") and n.endswith(".json")) == MANIFESTS
    assert "s4d/cli/main.py" in names and "pipelines/loader.py" in names and "preprocess/shards/writer.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "s4d = s4d.cli:run" in zipfile.ZipFile(wheel).read(entry).decode()
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert sorted(Path(n).name for n in members if "/manifests/" in n and n.endswith(".json")) == MANIFESTS
    assert any(n.endswith("/pyproject.toml") for n in members)


def test_the_wheel_in_a_fresh_venv_gives_a_working_s4d(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv)  # pip (and a current setuptools) from this environment
    bin_ = venv / "bin"
    purelib = Path(_sh(bin_ / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (purelib / "_reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch etc. from here, no download
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # every dependency must already be satisfied: nothing may be fetched
    _sh(bin_ / "python", "-m", "pip", "install", "-q", wheel, env=env, cwd=tmp_path)
    where = _sh(
        bin_ / "python", "-c", "import s4d, preprocess.manifest as m; print(s4d.__file__); print(m.MANIFESTS_DIR)", env=env, cwd=tmp_path
    ).split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the code and the manifests come from the wheel
    assert "Usage" in _sh(bin_ / "s4d", "--help", env=env, cwd=tmp_path)
    # a bare manifest name resolves inside the installed package: dfew's own layout is searched for
    dry = subprocess.run(
        [bin_ / "s4d", "shards", "--manifest", "dfew", "--raw", tmp_path, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert dry.returncode == 2 and "dfew: no split files found" in dry.stderr and "EmoLabel_DataSplit" in dry.stderr, dry.stderr
    ckpt = debug_checkpoint(tmp_path)
    fixtures = os.environ.get("S4D_FIXTURES")
    video = Path(fixtures) / "single_face.mp4" if fixtures and (Path(fixtures) / "single_face.mp4").is_file() else None
    if video is None:
        from tests.test_predict import demo_video

        video, _ = demo_video(tmp_path, frames=20)
    out = _sh(bin_ / "s4d", "predict", video, "-c", ckpt, *([] if video.suffix == ".mp4" else ["--no-align"]), env=env, cwd=tmp_path)
    assert out.split(": ")[1].split()[0] in NAMES


def test_without_facenet_pytorch_alignment_stops_with_the_install_line(monkeypatch):
    from preprocess.faces import FACENET_INSTALL, FaceDetector

    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # as if not installed: import raises ImportError
    with pytest.raises(ValueError, match="needs facenet-pytorch") as err:
        FaceDetector("cpu")
    assert FACENET_INSTALL in str(err.value) and "--no-deps" in FACENET_INSTALL
