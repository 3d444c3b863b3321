"""The ``report`` job: learning curves, transition points, costs and the recommendation."""
