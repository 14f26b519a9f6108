"""The logic both faces and the CLI call. No fastapi or strawberry here; services never commit."""
