"""Every flag of the `capsim` commands, declared once, with its unit in its help."""
