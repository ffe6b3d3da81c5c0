"""Placeholder: filled in by the architecture work of issue 6."""
