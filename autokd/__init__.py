"""autokd: search for the best knowledge-distilled student network.

Data flows through one module per stage:

    data -> models -> distill (losses, teacher, training) -> compress -> measure
         -> search (Optuna study, executors) -> report / export

``autokd.trial.run_trial(config, context) -> metrics`` is the unit of work; it knows nothing
of Optuna storage or Ray. Only ``autokd.search`` talks to the database and the executors.
"""

__version__ = "0.1.0"
