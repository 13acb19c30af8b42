"""What a newcomer reads: help texts, console lines, errors that name what was typed, the driver lock.

Fast tests drive the real CLI in-process (``CliRunner``) with inputs that fail before any training,
or real Optuna studies on SQLite; PostgreSQL tests provoke real connection errors (an unknown role,
an unknown database, a closed port). One slow test runs a real tiny search.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner

from autokd import cli
from autokd.cli import SearchInterrupted, app, command_names, plain_help, print_items, wall_time_line
from autokd.config import StudyConfig
from autokd.errors import AutokdError
from autokd.search.executor import best_of_each
from autokd.search.internals import set_system_attr
from autokd.search.study import _lock_driver_file, claim_trial, open_study, single_sqlite_driver
from tests.tiny import write_tiny_study

runner = CliRunner()


def one_error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0], result.output
    return lines[0]


# --------------------------------------------------------------------------- help


def _click_commands(group, prefix: str = "") -> list[str]:
    names = []
    for name, command in group.commands.items():
        names += _click_commands(command, f"{prefix}{name} ") if hasattr(command, "commands") else [prefix + name]
    return names


def test_top_level_help_names_every_registered_command():
    registered = _click_commands(get_command(app))  # what click dispatches, found independently of the help text
    assert sorted(command_names()) == sorted(registered)
    assert {"search", "check", "report", "export", "predict", "dashboard", "teacher train"} <= set(registered)
    out = runner.invoke(app, ["--help"], env={"COLUMNS": "400"}).output
    listed = out[out.index("Commands: "):].split(".", 1)[0]
    for name in registered:
        assert name in listed, (name, listed)


@pytest.mark.parametrize("command", [c.split() for c in command_names()] + [["teacher"]])
def test_every_help_renders_its_docstring_as_plain_paragraphs(command):
    callback = next((i.callback for i in _all_infos(app) if i.callback and _name(i) == command[-1]), None)
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "``" not in result.output and ":class:" not in result.output and ":func:" not in result.output
    if callback is not None:  # each paragraph on one line of a wide terminal: no break inside a sentence
        for paragraph in plain_help(callback.__doc__).replace("\\[", "[").split("\n\n"):
            assert paragraph in result.output, (paragraph, result.output)
    narrow = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}).output
    assert max(len(line) for line in narrow.splitlines()) <= 80


def _all_infos(typer_app):
    yield from typer_app.registered_commands
    for group in typer_app.registered_groups:
        yield from _all_infos(group.typer_instance)


def _name(info) -> str:
    return info.name or info.callback.__name__.replace("_", "-").removeprefix("teacher-")


def test_plain_help_reflows_and_drops_restructured_text():
    doc = """First line.

        The checks ``autokd search`` makes, see :func:`autokd.x`
        and more [not a style].
        """
    assert plain_help(doc) == "First line.\n\nThe checks 'autokd search' makes, see autokd.x and more \\[not a style]."


# --------------------------------------------------------------------------- errors name what was typed


def test_a_folder_of_yaml_files_is_named_with_its_files_and_the_command_to_run(tmp_path, monkeypatch):
    folder = tmp_path / "mystudies"
    write_tiny_study(folder)
    monkeypatch.chdir(tmp_path)
    line = one_error_line(runner.invoke(app, ["search", "mystudies"]))
    assert "folder 'mystudies' holds YAML files (tiny-space.yaml, tiny.yaml)" in line
    assert "not a study output folder" in line and "'autokd search mystudies/tiny.yaml'" in line  # the study, not its space
    line = one_error_line(runner.invoke(app, ["check", "mystudies"]))
    assert "'autokd check mystudies/tiny.yaml'" in line
    (tmp_path / "empty").mkdir()
    assert "holds no YAML files" in one_error_line(runner.invoke(app, ["search", "empty"]))
    assert "'nowhere' is neither a study file" in one_error_line(runner.invoke(app, ["report", "nowhere"]))


@pytest.mark.parametrize("args, expected", [
    (["--n-trials", "0"], "error: --n-trials 0 is out of range: must be an integer >= 1; fix: pass --n-trials an integer >= 1"),
    (["--max-concurrent", "0"], "error: --max-concurrent 0 is out of range"),
    (["--threads-per-trial", "0"], "error: --threads-per-trial 0 is out of range: must be an integer >= 1"),
    (["--image-size", "3"], "error: --image-size 3 is out of range: must be an integer in 8..224"),
    (["--timeout", "-1"], "error: --timeout -1.0 is out of range: must be a number > 0"),
    (["--executor", "foo"], "fix: pass --executor 'local' or 'ray'"),
])
def test_a_bad_option_value_names_the_option_as_typed(tmp_path, args, expected):
    study = write_tiny_study(tmp_path)
    line = one_error_line(runner.invoke(app, ["search", str(study), *args]))
    assert line.startswith(expected) or expected in line, line
    assert "command line" not in line and "n_trials" not in line and "'executor.kind'" not in line


def test_a_bad_teacher_train_option_names_the_option(tmp_path):
    line = one_error_line(runner.invoke(app, ["teacher", "train", "--out", str(tmp_path / "t.pt"), "--epochs", "0"]))
    assert line == "error: --epochs 0 is out of range: must be an integer >= 1; fix: pass --epochs an integer >= 1"
    assert not (tmp_path / "t.pt").exists()


def test_a_bad_format_names_the_option(tmp_path):
    study = write_tiny_study(tmp_path)
    line = one_error_line(runner.invoke(app, ["export", str(study), "--trial", "0", "--format", "foo"]))
    assert line == "error: --format foo is not an export format; fix: pass --format onnx or torchscript"
    line = one_error_line(runner.invoke(app, ["predict", "m.onnx", "x.png", "--format", "xml"]))
    assert line == "error: --format xml is not an output format of predict; fix: pass --format table, csv or json"


# --------------------------------------------------------------------------- storage errors: kind and origin


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_up():
    psycopg = pytest.importorskip("psycopg")
    from tests.conftest import POSTGRES_ADMIN

    try:
        psycopg.connect(POSTGRES_ADMIN, connect_timeout=5).close()
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable: {err}")
    return POSTGRES_ADMIN.rsplit("@", 1)[1].rsplit("/", 1)[0]  # host:port


@pytest.mark.postgres
def test_a_login_error_says_check_the_login_and_names_where_the_url_came_from(tmp_path, monkeypatch, postgres_up):
    monkeypatch.delenv("AUTOKD_STORAGE", raising=False)
    url = f"postgresql+psycopg://nosuchrole:s3cret@{postgres_up}/test"  # an unknown role: refused at login
    by_flag = runner.invoke(app, ["report", "--storage", url])
    line = one_error_line(by_flag)
    assert "role \"nosuchrole\" does not exist" in line and "check the user name and password" in line
    assert "--storage" in line.split("; fix: ")[1] and "start the database" not in line and "s3cret" not in line

    monkeypatch.setenv("AUTOKD_STORAGE", url)
    line = one_error_line(runner.invoke(app, ["report"]))
    fix = line.split("; fix: ")[1]
    assert "check the user name and password" in fix and "the URL in AUTOKD_STORAGE" in fix
    assert "--storage" not in fix and "s3cret" not in line
    monkeypatch.delenv("AUTOKD_STORAGE")

    study = write_tiny_study(tmp_path, storage=url.replace(":s3cret", ""))
    line = one_error_line(runner.invoke(app, ["report", str(study)]))
    assert f"the URL in 'storage:' in {study}" in line and "--storage" not in line.split("; fix: ")[1]


@pytest.mark.postgres
def test_an_unknown_database_and_a_closed_port_get_their_own_advice(monkeypatch, postgres_up):
    monkeypatch.delenv("AUTOKD_STORAGE", raising=False)
    line = one_error_line(runner.invoke(app, ["report", "--storage",
                                              f"postgresql+psycopg://postgres@{postgres_up}/autokd_no_such_db"]))
    assert "does not exist" in line and "fix: create the database" in line and "--storage" in line
    monkeypatch.setenv("AUTOKD_STORAGE", f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x")
    line = one_error_line(runner.invoke(app, ["report"]))
    assert "fix: start the database server, or correct the host and port in the URL in AUTOKD_STORAGE" in line


# --------------------------------------------------------------------------- console lines


def _study(tmp_path: Path, objectives: list[str]) -> tuple[StudyConfig, optuna.Study]:
    cfg = StudyConfig(name="console", objectives=objectives, output=str(tmp_path / "out"))
    cfg.output_dir.mkdir(parents=True)
    return cfg, open_study(cfg, heartbeat=False)


def test_best_readout_names_the_trial_of_each_best(tmp_path):
    cfg, study = _study(tmp_path, ["accuracy", "params", "latency_ms"])
    for values in ([0.90, 9000.0, 0.30], [1.00, 20000.0, 0.20], [0.95, 4660.0, 0.25]):
        study.tell(study.ask(), values)
    line = best_of_each(study.trials, cfg.objectives, study.directions)
    assert line == ("best of each objective, from different trials: accuracy 100.00% (trial 1), "
                    "params 4.66k (trial 2), latency_ms 0.200 ms (trial 1)")
    study.tell(study.ask(), [1.00, 4000.0, 0.10])  # one trial now holds every best
    assert best_of_each(study.trials, cfg.objectives, study.directions) == \
        "best: trial 3 (accuracy 100.00%, params 4.00k, latency_ms 0.100 ms)"


def test_wall_time_line_breaks_the_time_down():
    assert wall_time_line(514.64, 380.23) == "search wall time 514.6 s (teacher 380.2 s, trials 134.4 s)"


def test_items_wrap_between_items_at_80_columns(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80, color_system=None))
    print_items(["[bold]study[/] digits-default", "[bold]storage[/] sqlite:////tmp/k22/runs/digits-default/study.db",
                 "[bold]dataset[/] digits (1,293 train / 144 validation / 360 test, 1x8x8)"])
    assert out.getvalue().splitlines() == [
        "study digits-default  storage sqlite:////tmp/k22/runs/digits-default/study.db",
        "  dataset digits (1,293 train / 144 validation / 360 test, 1x8x8)"]


# --------------------------------------------------------------------------- Ctrl-C


def test_the_interrupt_message_counts_the_trials_this_driver_marked_fail(tmp_path):
    cfg, study = _study(tmp_path, ["accuracy", "params"])
    assert "before a trial started: no trial was marked FAIL" in SearchInterrupted(study).message
    other = study.ask()  # another driver's interrupted trial: not this one's to report
    set_system_attr(study, other, "autokd:driver", "elsewhere:1:1")
    other.set_user_attr("failed_because", "driver stopped")
    study.tell(other, state=TrialState.FAIL)
    mine = []
    for _ in range(2):
        trial = study.ask()
        claim_trial(study, trial)
        trial.set_user_attr("failed_because", "driver stopped")
        mine.append(trial)
    study.tell(mine[0], state=TrialState.FAIL)
    assert SearchInterrupted(study).message == (
        "interrupted: 1 running trial (1) was marked FAIL and will be resumed by the next run; completed trials are "
        "kept in the study. Run the same command again to continue.")
    study.tell(mine[1], state=TrialState.FAIL)
    message = SearchInterrupted(study).message
    assert message.startswith("interrupted: 2 running trials (1, 2) were marked FAIL and will be resumed by the ")


# --------------------------------------------------------------------------- the driver lock


def _lock_path(cfg: StudyConfig) -> Path:
    return cfg.output_dir / "study.db.driver.lock"


def test_the_driver_lock_is_removed_on_finish_and_on_error_and_refuses_a_second_driver(tmp_path):
    cfg = StudyConfig(name="locked", output=str(tmp_path / "out"))
    cfg.output_dir.mkdir()
    with single_sqlite_driver(cfg):
        assert _lock_path(cfg).read_text() == f"pid {os.getpid()}\n"
        with pytest.raises(AutokdError, match="already driven by pid"):
            _lock_driver_file(_lock_path(cfg), cfg).close()  # a second open file: as another process would
    assert not _lock_path(cfg).exists()
    with pytest.raises(KeyboardInterrupt):
        with single_sqlite_driver(cfg):
            raise KeyboardInterrupt
    assert not _lock_path(cfg).exists()


def test_a_driver_that_opened_the_lock_as_its_holder_removed_it_takes_the_new_file(tmp_path):
    cfg = StudyConfig(name="locked", output=str(tmp_path / "out"))
    cfg.output_dir.mkdir()
    with single_sqlite_driver(cfg):
        late = open(_lock_path(cfg), "a+")  # opened just before the holder removes the file
    try:
        handle = _lock_driver_file(_lock_path(cfg), cfg)  # must not end up holding the removed inode
        assert os.fstat(handle.fileno()).st_ino == os.stat(_lock_path(cfg)).st_ino
        with pytest.raises(AutokdError):
            _lock_driver_file(_lock_path(cfg), cfg)
        handle.close()
    finally:
        late.close()


def test_a_lock_left_by_a_sigkilled_driver_is_taken_over(tmp_path):
    cfg = StudyConfig(name="locked", output=str(tmp_path / "out"))
    cfg.output_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from autokd.config import StudyConfig
        from autokd.search.study import single_sqlite_driver
        with single_sqlite_driver(StudyConfig(name="locked", output={str(cfg.output_dir)!r})):
            print("held", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AutokdError, match=f"already driven by pid {holder.pid}"):
            _lock_driver_file(_lock_path(cfg), cfg)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert _lock_path(cfg).exists()  # SIGKILL runs no cleanup: the file stays, unlocked
    with single_sqlite_driver(cfg):
        assert _lock_path(cfg).read_text() == f"pid {os.getpid()}\n"
    assert not _lock_path(cfg).exists()


# --------------------------------------------------------------------------- a real search's console


@pytest.mark.slow
def test_a_search_prints_no_blank_line_explains_its_time_and_leaves_no_lock(tmp_path, tiny_teacher):
    study = write_tiny_study(tmp_path, n_trials=2, teacher={"checkpoint": str(tiny_teacher)})
    result = runner.invoke(app, ["search", str(study)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("study tiny  storage sqlite:///") and "" not in lines[:lines.index(next(
        line for line in lines if line.startswith("search wall time")))]
    [wall] = [line for line in lines if line.startswith("search wall time")]
    assert " s (teacher " in wall and ", trials " in wall
    assert any(line.startswith(("best: trial ", "best of each objective, from different trials: ")) for line in lines)
    assert not (tmp_path / "tiny" / "study.db.driver.lock").exists()
