"""Analysis of sweep results, from the Parquet files alone."""

from analysis.results import load_history, load_results

__all__ = ["load_results", "load_history"]
