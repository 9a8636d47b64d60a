"""tests/align: the offline Triton compile script is run by a test in its own process; importing
it here (doctest collection) would import triton without its interpreter, or fail without it."""

collect_ignore = ["triton_offline_compile.py"]
