"""Everything capsim writes or prints: result folders, CSV and JSON files, tables, plots."""
