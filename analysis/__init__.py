"""Analysis of sweep results, from the Parquet files alone."""

__all__ = ["load_results", "load_history"]


def __getattr__(name: str):
    # lazy: `study` imports analysis.bucket for storage paths and must not pay for pandas
    if name in __all__:
        from analysis import results
        return getattr(results, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
