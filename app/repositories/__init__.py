"""All SQL lives here; batch methods serve both faces and the bulk jobs."""
