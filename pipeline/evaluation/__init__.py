"""Evaluation, apart from the method: dataset loaders, report statistics and tables (pure)."""
