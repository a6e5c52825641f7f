"""A user's mistake and our bug are told apart by the CLI: ``InputError`` (raised where input
is validated) is one line and exit 2; any other exception, a bare ``ValueError`` included, is a
bug: one line naming the traceback log, and ``--debug`` shows the traceback itself."""

import sys

import pytest

from preprocess.errors import InputError

from .test_bad_inputs import one_error_line


def _run(monkeypatch, tmp_path, raised: BaseException, *flags: str) -> int:
    import preprocess.inspect
    import s4d.cli.main as cli

    def broken(*args, **kwargs):
        raise raised

    monkeypatch.setenv("S4D_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(preprocess.inspect, "describe", broken)
    monkeypatch.setattr(sys, "argv", ["s4d", *flags, "inspect", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    return exit_.value.code


def test_an_input_error_is_one_line_and_no_log(monkeypatch, tmp_path, capsys):
    code = _run(monkeypatch, tmp_path, InputError(f"{tmp_path}/index.parquet: labels [9] outside 0..1"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "labels [9] outside" in line and "unexpected" not in line and "report" not in line
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())


@pytest.mark.parametrize("raised", [ValueError("operands could not be broadcast"), KeyError("label"), RuntimeError("shape")])
def test_a_bare_library_error_is_reported_as_our_bug_with_its_log(monkeypatch, tmp_path, capsys, raised):
    code = _run(monkeypatch, tmp_path, raised)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"unexpected {type(raised).__name__}" in line and "please report" in line
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in line and "Traceback" in logs[0].read_text()


def test_debug_shows_a_bugs_traceback(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        _run(monkeypatch, tmp_path, ValueError("operands could not be broadcast"), "--debug")


def test_every_error_type_the_project_raises_for_bad_input_is_an_input_error():
    from preprocess.lock import FolderBusy
    from preprocess.manifest import ManifestError
    from preprocess.media import MediaError
    from preprocess.safe_io import SymlinkRefused
    from preprocess.shards.reader import ShardError
    from s4d.checkpoint.finite import NonFiniteOutput
    from s4d.checkpoint.keymap import CheckpointError
    from s4d.runtime.shared_fs import RunFolderNotShared

    for cls in (FolderBusy, ManifestError, MediaError, SymlinkRefused, ShardError, NonFiniteOutput, CheckpointError, RunFolderNotShared):
        assert issubclass(cls, InputError), cls
