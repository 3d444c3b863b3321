"""The ``data`` job: evaluation set, training pool and nested training sets for a task."""
