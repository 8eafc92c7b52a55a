"""The `kdsl` command line. Each noun is a typer sub-app; `main.py` wires them."""
