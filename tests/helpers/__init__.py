"""Helpers shared by the tests (no tests here): tiny models and datasets built from configs, recipe and data
fixtures of the command line, the stand-in Hub, the benchmark-script importer, and child processes (a resumed
run, an FSDP teacher, a process recorder) that tests start."""
