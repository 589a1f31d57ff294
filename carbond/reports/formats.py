"""The output formats of reports and their file extensions (no imports: the daemon and the CLI parser load this,
not :mod:`.render`, which brings ``html`` and its 2,000-entry entity table)."""

FORMATS = ("table", "csv", "json", "md", "html")
EXTENSIONS = {"table": "txt", "csv": "csv", "json": "json", "md": "md", "html": "html"}
