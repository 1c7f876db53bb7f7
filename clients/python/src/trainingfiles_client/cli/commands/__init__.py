"""The commands, one module per group; each module's `COMMANDS` lists its own."""
