"""Shared pieces of the example pipelines: data preparation, models, metrics, plots and reports.

Nothing here downloads data or weights; every dataset is read through
``examples.shipped_data`` (``$DEEPRC_DATA``, else the repo's ``data/``). Modules that need a framework (torch, TensorFlow) import it themselves,
so the data preparation and metrics can be used and tested without either.
"""
