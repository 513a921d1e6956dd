"""Persistence: SQLModel tables and plain functions over a caller-owned Session."""
