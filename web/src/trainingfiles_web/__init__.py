"""The Training File Service\x27s web console."""
