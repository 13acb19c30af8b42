"""Reports: a study's trials as tables, plots and one HTML page, read through Optuna's API only.

The layers, each importing only those before it:

- :mod:`~autokd.report.trials`: which trials a report shows (the front, failures, committees, runs);
- :mod:`~autokd.report.sections`: the report's tables, defined once as data (:class:`Section`);
- :mod:`~autokd.report.labels` and :mod:`~autokd.report.plots`: ``pareto.png``, ``per_class.png``, ``history.png``;
- :mod:`~autokd.report.console` and :mod:`~autokd.report.html`: the same sections on a terminal and in
  ``report.html``.

The front is chosen on validation accuracy (the objective); every table shows validation and
test accuracy side by side, and per-class and committee figures are the test split's (docs/methodology.md).
"""

from autokd.report.console import print_report, print_section, rich_table
from autokd.report.html import html_report, section_html
from autokd.report.plots import (OBJECTIVE_AXES, history_figure, pareto_figure, robust_limits, student_kind,
                                 write_plots)
from autokd.report.sections import (Section, committee_section, committee_warnings, compression_section,
                                    off_front_section, pareto_section, per_class_section, report_sections,
                                    retiming_section, rounded, teacher_section, unfinished_section)
from autokd.report.trials import (best_so_far, committee_trials, cost_objectives, failure_summary, pareto_trials,
                                  run_starts, trial_counts)

__all__ = ["OBJECTIVE_AXES", "Section", "best_so_far", "committee_section", "committee_trials", "committee_warnings",
           "compression_section", "cost_objectives", "failure_summary", "history_figure", "html_report",
           "off_front_section", "pareto_figure", "pareto_section", "pareto_trials", "per_class_section",
           "print_report", "print_section", "report_sections", "retiming_section", "rich_table", "robust_limits",
           "rounded", "run_starts", "section_html", "student_kind", "teacher_section", "trial_counts", "unfinished_section", "write_plots"]
