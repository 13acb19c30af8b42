"""The report on a terminal: each section as a rich table, then the trial counts and the plots written."""

from __future__ import annotations

from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from autokd.config import StudyConfig
from autokd.record import study_teacher
from autokd.report.plots import write_plots
from autokd.report.sections import Section, report_sections
from autokd.report.trials import trial_counts


def rich_table(section: Section) -> Table:
    """A section as a rich table (its notes are printed apart: :func:`print_section`)."""
    table = Table(title=section.title, title_justify=section.title_justify)
    for column in section.columns:
        table.add_column(column.header, justify=column.justify, overflow=column.overflow)
    for row in section.rows:
        table.add_row(*row.cells, style=row.style)
    return table


def print_section(console: Console, section: Section) -> None:
    console.print(rich_table(section))
    for line in section.notes:
        console.print(f"[yellow]warning:[/] {line}")


def print_report(study: optuna.Study, study_cfg: StudyConfig, console: Console) -> Path:
    """Print the report's sections (:func:`~autokd.report.sections.report_sections`) and write its plots
    beside the study; returns the first plot's path."""
    for section in report_sections(study):
        print_section(console, section)
    console.print(trial_counts(study))
    plots = write_plots(study, study_cfg.output_dir, study_teacher(study))
    console.print(f"plots written: {', '.join(str(p) for p in plots)}")
    return plots[0]
