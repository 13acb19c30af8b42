"""autokd: search for the best knowledge-distilled student network.

Data flows through one module per stage:

    data -> models -> distill (losses, teacher, training) -> compress -> measure
         -> search (Optuna study, executors) -> report / export

``autokd.trial.run_trial(config, context) -> metrics`` is the unit of work; it knows nothing
of Optuna storage or Ray. Only ``autokd.search`` talks to the database and the executors.
"""

import os as _os

__version__ = "0.1.0"

# OpenMP threads that spin while they wait collapse when the host has more runnable threads than
# cores (two 2-thread trials on 2 cores trained 10x slower: bench/results/trial_threads.json).
# Passive waiting shares the cores instead. It takes effect when set before torch loads OpenMP
# (the CLI and the Ray workers it starts); a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
