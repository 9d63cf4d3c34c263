"""One module per revision, oldest first; each says what it changes and why."""
