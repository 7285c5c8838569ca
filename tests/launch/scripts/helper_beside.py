"""Imported by read_relative.py from the script's own folder (sys.path[0])."""

NAME = "helper beside the script"
