"""What users run: the ``mrvae`` command line and the web app."""
