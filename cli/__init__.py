"""The `pvc` command line: parse, submit or read, display. Heavy libraries load lazily."""
