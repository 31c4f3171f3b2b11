"""Built-in synthetic user logs with hidden truth (numpy + pyarrow only)."""
