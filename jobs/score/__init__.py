"""The ``score`` job: metrics per example and bootstrap intervals per arm."""
