"""The application layer: run orchestration, the results store, executors, outputs,
progress and the ``uqbench`` command. Everything below it (methods, evaluation, core)
is usable without it."""
