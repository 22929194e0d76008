"""The benchmark (run ``bench/bench.py``): what its modules share."""

API_KEY = "bench"
MB = 1024 * 1024


class BenchFailure(Exception):
    """A job did not end as it should, or a process of the stack died."""
