"""Pydantic DTOs the services return and both faces render."""
