"""Distributed operations on global tables: the built-in Arrow engine and the Cylon adapter."""
