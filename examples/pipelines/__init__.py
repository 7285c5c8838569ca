"""Shared pieces of the example pipelines: data preparation, models, metrics, plots and reports.

Nothing here downloads data or weights; every dataset is read from ``../shared/data`` (or
``DEEPRC_DATA``). Modules that need a framework (torch, TensorFlow) import it themselves,
so the data preparation and metrics can be used and tested without either.
"""
