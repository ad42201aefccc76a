"""DVC stage scripts, run as `python -m stages.<name>` from the project root (see dvc.yaml)."""
