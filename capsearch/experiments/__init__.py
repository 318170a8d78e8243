"""Experiments as the peers write them: Sarathi-Serve's and Etalon's YAML schemas, their conventions, capsim's keys."""
