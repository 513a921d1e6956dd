"""Evaluation that needs the running system or heavy libraries: replay, BERTScore, plots."""
