"""The ``autokd`` command line; ``autokd --help`` lists its commands (:func:`command_names`).

Every user error is an :class:`AutokdError`, printed as one line on stderr with exit code 2 (a
traceback only with ``--debug``), raised before the study or its folder is touched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autokd.config import StudyConfig, TeacherRecipe
from autokd.errors import AutokdError, SearchFailed, disk_full
from autokd.cli_help import Command, Group, plain_help
from autokd.files import check_output_file, check_writable_folder
from autokd.studies import open_existing, resolve_study, storage_from_env, storage_named, storage_origin, warm_start

console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)
_state = {"debug": False}


app = typer.Typer(add_completion=False, no_args_is_help=False, cls=Group)  # its help names the commands: _finish_help()
teacher_app = typer.Typer(help="Train teacher checkpoints.", cls=Group)
app.add_typer(teacher_app, name="teacher")


def _print_version(value: bool) -> None:
    if value:
        import platform

        import optuna
        import torch

        from autokd import __version__

        console.print(f"autokd {__version__} (torch {torch.__version__}, optuna {optuna.__version__}, "
                      f"python {platform.python_version()})", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Show autokd's version and exit.")) -> None:
    import logging

    import optuna

    _state["debug"] = debug
    optuna.logging.set_verbosity(logging.INFO if debug else logging.WARNING)
    if not debug:  # library deprecation chatter is for developers, not for a search's output
        import warnings

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # loading an int8 checkpoint: torch's own TypedStorage / quantized-tensor deprecations, nothing a user can change
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._utils")


def guarded(fn: Callable) -> Callable:
    """Turn AutokdError into one line + exit 2 and Ctrl-C into a clean exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutokdError as err:
            if _state["debug"]:
                raise
            errors.print(str(err), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt as err:
            errors.print(getattr(err, "message", "interrupted"), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except Exception as err:  # a disk that filled up or turned read-only mid-run: one line, not a traceback
            full = disk_full(err)
            if full is not None and not _state["debug"]:
                errors.print(str(full), markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(full.exit_code) from None
            if _state["debug"] or not isinstance(err, OSError) or err.errno not in _WRITE_ERRORS:
                raise
            errors.print(f"error: cannot write {err.filename or 'a file'}: {err.strerror}; fix: free space or "
                         "choose a writable folder (--output, --out), then run the same command again",
                         markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def print_warnings(lines: Any) -> None:
    """Each line as ``warning: ...`` on stderr (e.g. files a data set's loading skipped)."""
    for line in lines:
        errors.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- search


@app.command(cls=Command)
@guarded
def search(
    study: Optional[str] = typer.Argument(None, help="Study YAML (default: the built-in digits study)."),
    n_trials: Optional[int] = typer.Option(None, help="Total finished trials the study should hold."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL (default: SQLite in the output folder)."),
    storage_retry_seconds: Optional[float] = typer.Option(
        None, help="Wait this long for a lost database to come back before stopping (default 300)."),
    output: Optional[str] = typer.Option(None, help="Output folder (default: runs/NAME)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset spec overriding the study's, e.g. imagefolder:PATH."),
    data_root: Optional[str] = typer.Option(None, help="Folder holding the dataset files."),
    download: Optional[bool] = typer.Option(None, "--download", help="Allow torchvision to download the dataset."),
    image_size: Optional[int] = typer.Option(None, help="Resize every image to N x N px (8..224)."),
    executor: Optional[str] = typer.Option(None, help="local or ray."),
    max_concurrent: Optional[int] = typer.Option(None, help="Trials at once (ray executor)."),
    gpus_per_trial: Optional[float] = typer.Option(None, help="GPU fraction per trial (ray), e.g. 0.25."),
    cpus_per_trial: Optional[float] = typer.Option(None, help="CPUs per trial (ray)."),
    threads_per_trial: Optional[int] = typer.Option(
        None, help="Torch threads per trial (default: the cores shared among the trials running at once)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join: auto or ray://host:port."),
    latency_backend: Optional[str] = typer.Option(None, help="onnxruntime, torch or command (docs/latency.md)."),
    enqueue_from: Optional[str] = typer.Option(None, help="Run first the front of this study (YAML, folder or name)."),
    enqueue_from_storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the --enqueue-from study."),
    early_stopping: Optional[bool] = typer.Option(
        None, "--early-stopping/--no-early-stopping",
        help="Stop trials that cheaper finished trials lead by more than they can make up (default: the study's)."),
) -> None:
    """Run (or continue) a student search; prints the Pareto front."""
    import signal

    # SIGINT means Ctrl-C for both executors, even when a shell started us with it ignored (a
    # background job): the running trials are told FAIL and re-enqueued, exit 130.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from autokd.space import SearchSpace
    from autokd.search.study import open_study, single_sqlite_driver

    cfg = resolve_study(study).with_overrides(
        n_trials=n_trials, timeout=timeout, storage=storage, storage_retry_seconds=storage_retry_seconds, output=output,
        dataset=dataset, data_root=data_root, download=download, image_size=image_size,
        executor=executor, max_concurrent=max_concurrent, gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial, threads_per_trial=threads_per_trial, address=address,
        latency_backend=latency_backend, early_stopping=early_stopping)
    cfg = storage_from_env(cfg)
    check_writable_folder(cfg.output_dir, "output folder", "--output")
    from autokd.latency import check_latency_command

    check_latency_command(cfg.latency_command)
    if cfg.executor.kind == "ray":
        from autokd.search.ray_runtime import preflight

        preflight(cfg)  # CPUs/GPUs per trial, Ray Client and the cluster's address: before the teacher trains
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    warm = warm_start(cfg, space, study, enqueue_from, enqueue_from_storage)  # a bad entry: one line, nothing written
    from autokd.context import load_study_data

    from autokd.teacher import validate_teacher

    validate_teacher(cfg, hint_losses=space.hint_losses())
    data = load_study_data(cfg)  # bad dataset paths fail here, before the study exists
    validate_teacher(cfg, data)  # a teacher file, factory or weights that cannot fit the data
    space.check_weights(num_classes=data.num_classes, in_channels=data.channels, image_size=data.image_size)
    print_warnings(data.warnings)
    created_output = not cfg.output_dir.exists()
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    driver = contextlib.ExitStack()
    try:
        with storage_named(storage_origin(study, storage)):
            optuna_study = open_study(cfg)  # a changed objective is refused before the lock file is touched
        driver.enter_context(single_sqlite_driver(cfg))  # a second driver on one SQLite file stops here
    except AutokdError:
        driver.close()
        if created_output and not any(p for p in cfg.output_dir.iterdir() if not p.name.endswith(".driver.lock")):
            shutil.rmtree(cfg.output_dir)
        raise
    with driver:
        try:
            _search(cfg, space, data, optuna_study, warm)
        except KeyboardInterrupt:
            raise SearchInterrupted(optuna_study) from None


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``autokd search``: ``message`` names the trials this driver marked FAIL (to resume)."""

    def __init__(self, optuna_study: Any):
        from autokd.search.study import interrupted_trials

        try:
            numbers = interrupted_trials(optuna_study)
        except Exception:  # the database itself went away: say what is known
            numbers = None
        kept = "completed trials are kept in the study. Run the same command again to continue."
        if numbers is None:
            self.message = f"interrupted: trials that were running are marked FAIL; {kept}"
        elif not numbers:
            self.message = f"interrupted before a trial started: no trial was marked FAIL; {kept}"
        else:
            listed = ", ".join(map(str, numbers))
            self.message = (f"interrupted: {len(numbers)} running trial{'s' * (len(numbers) > 1)} ({listed}) "
                            f"{'were' if len(numbers) > 1 else 'was'} marked FAIL and will be resumed by the next "
                            f"run; {kept}")
        super().__init__(self.message)


def _search(cfg: StudyConfig, space: Any, data: Any, optuna_study: Any, warm: Any) -> None:
    """The search proper, once this process holds the study: queue warm starts, run, print the front, judge."""
    from autokd.search.storage import redact_url

    print_items(["[bold]study[/] " + escape(cfg.name), "[bold]storage[/] " + escape(redact_url(cfg.storage_url)),
                 f"[bold]dataset[/] {escape(data.name)} ({len(data.train_labels):,} train / "
                 f"{len(data.val_labels):,} validation / {len(data.test_labels):,} test, "
                 f"{data.channels}x{data.image_size}x{data.image_size})"])
    from autokd.search.snapshot import write_snapshot

    write_snapshot(cfg)
    started = time.perf_counter()
    teacher_seconds: list[float] = []

    def prepare() -> Any:
        # The teacher is trained (or loaded) once by this driver; Ray workers only load its checkpoint.
        begun = time.perf_counter()
        try:
            return prepare_context(optuna_study, cfg, data)
        finally:
            teacher_seconds.append(time.perf_counter() - begun)

    from autokd.search import enqueue_lines, make_executor, run_search

    for line in enqueue_lines(optuna_study, cfg, warm):  # warm starts go first in the queue
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    told = run_search(optuna_study, cfg, space, make_executor(cfg.executor.kind), console=console, prepare=prepare)
    if teacher_seconds:  # else the study's budget was already spent: nothing ran
        console.print(wall_time_line(time.perf_counter() - started, teacher_seconds[0]), markup=False, highlight=False)
    from autokd.record import study_teacher
    from autokd.report import failure_summary, pareto_section, rich_table

    console.print(rich_table(pareto_section(optuna_study, study_teacher(optuna_study))))
    failures = failure_summary(told)
    if failures and not any(t.state.name in ("COMPLETE", "PRUNED") for t in told):
        raise SearchFailed(f"no trial finished: {failures}",
                           "read the first trial log, then correct the study or search space and run again")
    if failures:
        errors.print(f"warning: {failures}", markup=False, highlight=False, soft_wrap=True)


def wall_time_line(seconds: float, teacher_seconds: float) -> str:
    """``search wall time 514.6 s (teacher 380.2 s, trials 134.4 s)``: the trials part is the progress bar's time."""
    return (f"search wall time {seconds:.1f} s (teacher {teacher_seconds:.1f} s, "
            f"trials {max(0.0, seconds - teacher_seconds):.1f} s)")


def print_items(items: list[str], sep: str = "  ", indent: str = "  ") -> None:
    """Print rich-markup ``items`` on as few lines as the console's width allows, breaking only between items."""
    from rich.text import Text

    lines: list[str] = []
    for item in items:
        if lines and Text.from_markup(lines[-1] + sep + item).cell_len <= console.width:
            lines[-1] += sep + item
        else:
            lines.append((indent if lines else "") + item)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def prepare_context(optuna_study: Any, cfg: StudyConfig, data: Any = None) -> Any:
    """Data, teacher (trained once, with a progress bar) and the teacher's figures on the study."""
    from autokd.context import build_context
    from autokd.search.prepare import store_teacher

    # transient: gone when done; not drawn at all where it could not be erased (a log file, a pipe)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("teacher", total=cfg.teacher.epochs, info="")

        def on_teacher_epoch(epoch: int, metrics: dict) -> None:
            progress.update(task, completed=epoch + 1, info=f"val acc {100 * metrics.get('accuracy', 0):.1f}%")

        context = build_context(cfg, on_teacher_epoch=on_teacher_epoch, data=data)
    store_teacher(optuna_study, context)
    summary = context.teacher_summary
    print_items([f"teacher {escape(' + '.join(summary['members']))}:",
                 f"validation accuracy {100 * summary['validation_accuracy']:.2f}%,",
                 f"test {100 * summary['test_accuracy']:.2f}%,", f"{summary['params']:,} params"], sep=" ")
    return context


# --------------------------------------------------------------------------- check


@app.command(cls=Command)
@guarded
def check(
    study: Optional[str] = typer.Argument(None, help="Study YAML, output folder, or name (default: the built-in study)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset spec overriding the study's, e.g. imagefolder:PATH."),
    data_root: Optional[str] = typer.Option(None, help="Folder holding the dataset files."),
    image_size: Optional[int] = typer.Option(None, help="Resize every image to N x N px (8..224)."),
    latency_backend: Optional[str] = typer.Option(None, help="onnxruntime, torch or command (docs/latency.md)."),
) -> None:
    """Validate a study without running it: values, search space, data, teacher, constraints.

    The checks ``autokd search`` makes before it starts, and no more work than they take: the
    data's layout is listed (one image header read, nothing decoded), teacher checkpoints are
    opened weights-only; nothing trains, no database is opened, no file is written. Exit 0 with a
    summary, or 2 with one line naming the problem and its fix.
    """
    from autokd.studies import check_study

    cfg = resolve_study(study, "check").with_overrides(dataset=dataset, data_root=data_root, image_size=image_size,
                                                       latency_backend=latency_backend)
    rows = check_study(cfg, print_warnings)
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)
    console.print(f"study {cfg.name}: OK (nothing trained, no database opened)")


# --------------------------------------------------------------------------- report, export, dashboard


@app.command(cls=Command)
@guarded
def report(study: Optional[str] = typer.Argument(None, help="Study YAML, output folder, or name."),
           storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the study."),
           html: bool = typer.Option(False, "--html", help="Also write one self-contained HTML report "
                                                          "(default OUTPUT/report.html)."),
           out: Optional[Path] = typer.Option(None, help="The HTML report's file (implies --html)."),
           retime: bool = typer.Option(False, "--retime", help="First time the front's members again together, "
                                       "interleaved (kept beside earlier re-timings; docs/latency.md).")) -> None:
    """Print the Pareto front and per-class accuracy; write pareto.png, per_class.png, history.png beside the study."""
    from autokd.report import html_report, print_report
    from autokd.search.snapshot import study_settings

    if out is not None:
        check_output_file(out, "--out")
    cfg, optuna_study = open_existing(study, storage, "report")
    if retime:
        from autokd.search.retime import retime_front, retime_line

        retiming = retime_front(optuna_study, cfg, trigger="report")
        console.print(retime_line(retiming) if retiming else "no front to re-time: the study has no COMPLETE trial")
    print_report(optuna_study, cfg, console)
    if html or out is not None:
        target = out or cfg.output_dir / "report.html"
        check_output_file(target, "--out")
        written = html_report(optuna_study, cfg, target, study_settings(cfg))
        console.print(f"HTML report written to {written} ({written.stat().st_size:,} bytes; opens offline)")


@app.command(cls=Command)
@guarded
def export(study: Optional[str] = typer.Argument(None, help="Study YAML, output folder, or name."),
           trial: int = typer.Option(..., "--trial", help="Trial number to export."),
           format: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
           out: Optional[Path] = typer.Option(None, help="Output file (default: beside the study)."),
           storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the study.")) -> None:
    """Write a trial's student as a deployable ONNX or TorchScript file, checked against PyTorch."""
    from autokd.context import load_study_data
    from autokd.export import FORMATS, export_trial, load_trial_model, sidecar_path
    from autokd.record import study_classes, trial_figures
    from autokd.search.weights import trial_weights

    if format not in FORMATS:
        raise AutokdError(f"--format {format} is not an export format", f"pass --format {' or '.join(FORMATS)}")
    if out is not None:
        check_output_file(out, "--out")
    cfg, optuna_study = open_existing(study, storage, "export")
    frozen, weights = trial_weights(cfg, optuna_study, trial)
    model, payload = load_trial_model(weights)
    data = load_study_data(cfg, show_progress=False)
    suffix = {"onnx": ".onnx", "torchscript": ".ts"}[format]
    out = out or cfg.output_dir / "exports" / f"trial{trial:05d}{suffix}"
    check_output_file(out, "--out")
    check = export_trial(model, payload, format, out, data, classes=study_classes(optuna_study), study=cfg.name,
                         trial=trial, figures=trial_figures(frozen))
    console.print(f"wrote {out} ({out.stat().st_size:,} bytes); predictions agree with PyTorch on "
                  f"{100 * check.agreement:.2f}% of {check.test_images} test images")
    line = f"the export's test accuracy {100 * check.test_accuracy:.2f}% (recorded {100 * check.recorded_test_accuracy:.2f}%)"
    if check.large_share is not None:
        line += (f"; {100 * check.large_share:.1f}% of test inputs go to the large member "
                 f"(recorded {100 * check.recorded_large_share:.1f}%)")
    console.print(line)
    metadata = check.metadata
    where = "in its metadata_props" if format == "onnx" else f"in {sidecar_path(out)}"
    console.print(f"metadata {where}: {len(metadata['classes'])} classes, input {metadata['input_shape']} "
                  f"{metadata['layout']} {metadata['color_mode']} in [0, 1], normalised inside the model")
    if check.agreement < 0.99:
        raise AutokdError(f"exported {format} agrees with PyTorch on only {100 * check.agreement:.2f}% of the test "
                          "split",
                          "report this trial; try the other format")


@app.command(cls=Command)
@guarded
def predict(paths: list[str] = typer.Argument(..., metavar="MODEL IMAGES",
                                              help="An export (.onnx, or TorchScript .ts) then image files or folders; "
                                                   "with --study/--trial, only images."),
            study: Optional[str] = typer.Option(None, "--study", help="Run this study's trial (with --trial) instead."),
            trial: Optional[int] = typer.Option(None, "--trial", help="Trial number of --study."),
            format: str = typer.Option("table", "--format", help="table, csv or json."),
            storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of --study.")) -> None:
    """Classify image files with an export; a class/image folder also reports accuracy per class."""
    from autokd.predict import OUTPUT_FORMATS, collect_samples, load_images, open_model, score

    if format not in OUTPUT_FORMATS:
        raise AutokdError(f"--format {format} is not an output format of predict",
                          f"pass --format {', '.join(OUTPUT_FORMATS[:-1])} or {OUTPUT_FORMATS[-1]}")
    if (study is None) != (trial is None):
        raise AutokdError("--study and --trial go together", "pass both, or an exported MODEL file instead")
    if study is None:
        if len(paths) < 2:
            raise AutokdError("no images given", "run 'autokd predict MODEL IMAGE_OR_FOLDER...'")
        runner, images = open_model(Path(paths[0])), paths[1:]
    else:
        runner, images = _trial_runner(study, trial, storage), paths
    classes = runner.metadata["classes"]
    skipped: list[str] = []
    samples = collect_samples([Path(p) for p in images], classes, skipped)
    print_warnings(skipped)
    result = score(runner.logits(load_images(samples, runner.metadata)), samples, classes)
    _print_predictions(result, runner, format)


def _trial_runner(study: str, trial: int, storage: Optional[str]) -> Any:
    """A COMPLETE trial's deployable model, described like its export would be."""
    from autokd.export import export_metadata, load_trial_model
    from autokd.predict import module_runner
    from autokd.record import study_classes, trial_figures
    from autokd.search.weights import trial_weights

    cfg, optuna_study = open_existing(study, storage, "predict")
    frozen, weights = trial_weights(cfg, optuna_study, trial)
    model, payload = load_trial_model(weights)
    metadata = export_metadata(payload, classes=study_classes(optuna_study), study=cfg.name, trial=trial,
                               figures=trial_figures(frozen))
    return module_runner(model.eval(), metadata, f"study {cfg.name} trial {trial} (PyTorch)")


def _print_predictions(result: Any, runner: Any, format: str) -> None:
    from autokd.predict import per_class_table, predictions_table, to_csv, to_json

    if format == "csv":
        sys.stdout.write(to_csv(result))
        return
    if format == "json":
        sys.stdout.write(to_json(result, runner.metadata))
        return
    meta = runner.metadata
    origin = f"study {meta['study']} trial {meta['trial']}, " if "study" in meta and "trial" in meta else ""
    recorded = f", recorded test accuracy {100 * meta['test_accuracy']:.2f}%" if "test_accuracy" in meta else ""
    console.print(f"model {runner.source}: {origin}{len(meta['classes'])} classes, input {meta['input_shape']} "
                  f"{meta['color_mode']}{recorded}")
    console.print(predictions_table(result))
    if result.accuracy is not None:
        console.print(per_class_table(result))


@app.command(cls=Command)
@guarded
def dashboard(study: Optional[str] = typer.Argument(None, help="Study YAML, output folder, or name."),
              host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine only)."),
              port: int = typer.Option(8080, help="Port."),
              storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the study.")) -> None:
    """Serve optuna-dashboard on the study's storage and print its URL."""
    import optuna_dashboard

    from autokd.search.internals import storage_of
    from autokd.search.lifecycle import artifact_store

    cfg, optuna_study = open_existing(study, storage, "dashboard")
    console.print(f"optuna-dashboard for '{cfg.name}' at http://{host}:{port}/dashboard/ (Ctrl-C stops it)")
    optuna_dashboard.run_server(storage_of(optuna_study), host=host, port=port, artifact_store=artifact_store(cfg))


# --------------------------------------------------------------------------- teacher


_RECIPE = TeacherRecipe()  # the teacher defaults, shown in the options' help


@teacher_app.command("train", cls=Command)
@guarded
def teacher_train(
    out: Path = typer.Option(..., help="Checkpoint file to write."),
    dataset: str = typer.Option("digits", help="digits, cifar10, ..., or imagefolder:PATH."),
    family: str = typer.Option("resnet18", help="Model family from the registry."),
    knob: list[str] = typer.Option([], help="Family knob as NAME=VALUE (repeatable)."),
    epochs: Optional[int] = typer.Option(None, help=f"Default {_RECIPE.epochs}."),
    lr: Optional[float] = typer.Option(None, help=f"Default {_RECIPE.lr}."),
    batch_size: Optional[int] = typer.Option(None, help=f"Default {_RECIPE.batch_size}."),
    optimizer: Optional[str] = typer.Option(None, help=f"sgd or adamw (default {_RECIPE.optimizer})."),
    schedule: Optional[str] = typer.Option(None, help=f"onecycle, cosine or step (default {_RECIPE.schedule})."),
    weight_decay: Optional[float] = typer.Option(None, help=f"Default {_RECIPE.weight_decay}."),
    label_smoothing: Optional[float] = typer.Option(None, help=f"Default {_RECIPE.label_smoothing} (off)."),
    crop: Optional[bool] = typer.Option(None, "--crop/--no-crop", help="Random crop (default: the dataset's)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Random flip (default: the dataset's)."),
    seed: int = typer.Option(0, help="Seed of the data split, initialisation and augmentation."),
    data_root: Optional[str] = typer.Option(None, help="Folder holding the dataset files."),
    download: bool = typer.Option(False, "--download", help="Allow torchvision to download the dataset."),
) -> None:
    """Train a teacher on labels and save it as a weights-only checkpoint (the study file's teacher recipe)."""
    from autokd.checkpoint import save_checkpoint
    from pydantic import ValidationError

    from autokd.config import _validation_error, option_flag
    from autokd.models import build_model
    from autokd.teacher import train_teacher
    from autokd.context import augment_policy, load_study_data
    from autokd.train import pick_device

    knobs = dict(_parse_knob(k) for k in knob)
    given = dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, schedule=schedule,
                 weight_decay=weight_decay, label_smoothing=label_smoothing, crop=crop, flip=flip)
    try:
        recipe = TeacherRecipe(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        raise _validation_error("command line", "option", err, TeacherRecipe,
                                flags={k: option_flag(k) for k in given}) from None
    cfg = StudyConfig(dataset=dataset, data_root=data_root, download=download, seed=seed)
    data = load_study_data(cfg)
    print_warnings(data.warnings)
    build_model(family, num_classes=data.num_classes, in_channels=data.channels, image_size=data.image_size,
                **knobs)  # validate family and knobs before any training
    with Progress(TextColumn("teacher {task.fields[family]}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console) as progress:
        task = progress.add_task("train", total=recipe.epochs, family=family, info="")
        net, acc = train_teacher(
            data, family=family, knobs=knobs, recipe=recipe,
            policy=augment_policy(cfg, data), device=pick_device(), seed=seed,
            on_epoch=lambda e, m: progress.update(task, completed=e + 1, info=f"acc {100 * m['accuracy']:.1f}%"))
    save_checkpoint(out, net, family=family, knobs=net.knobs, num_classes=data.num_classes,
                    in_channels=data.channels, image_size=data.image_size, mean=data.mean, std=data.std,
                    accuracy=acc, dataset=dataset, teacher_recipe=recipe.model_dump(mode="json"))
    console.print(f"teacher {family} test accuracy {100 * acc:.2f}% -> {out}")


def _parse_knob(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise AutokdError(f"knob '{text}' is not NAME=VALUE", "write e.g. --knob width=32")
    name, value = text.split("=", 1)
    return name.strip(), yaml.safe_load(value)


# --------------------------------------------------------------------------- help


def command_names(typer_app: typer.Typer = app, prefix: str = "") -> list[str]:
    """Every command as typed, in registration order: ``search``, ..., ``teacher train``."""
    from typer.main import get_command_name

    names = [prefix + (info.name or get_command_name(info.callback.__name__)) for info in typer_app.registered_commands]
    for group in typer_app.registered_groups:
        names += command_names(group.typer_instance, f"{prefix}{group.name} ")
    return names


def _finish_help(typer_app: typer.Typer = app) -> None:
    """Give every command its docstring as clean help, and the top level the list of commands."""
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None:
            info.help = plain_help(info.callback.__doc__)
    for group in typer_app.registered_groups:
        _finish_help(group.typer_instance)
    if typer_app is app:
        app.info.help = ("autokd: a search for the best knowledge-distilled student network. Commands: "
                         f"{', '.join(command_names())}.")


_finish_help()


def main() -> None:
    from autokd.argv import ARGV_PASSWORD_WARNING, hide_argv_password

    if hide_argv_password():
        errors.print(ARGV_PASSWORD_WARNING, markup=False, highlight=False, soft_wrap=True)
    app()


if __name__ == "__main__":
    sys.exit(main())
