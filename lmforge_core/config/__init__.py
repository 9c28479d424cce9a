"""Typed configuration sections that the one Settings object is made of."""
