"""The command-line tools: one module per command, each with ``main(argv=None) -> exit code``.

The installed commands (``reid-train``, ``reid-eval``, ``reid-search``, ``reid-serve``, ...;
setup.py's ``console_scripts``) and the scripts ``python tools/NAME.py`` run the same
``main``.  Every ``main`` goes through :func:`reid_srdl.core.cli.run` (logging set-up; errors ->
one line and an exit code).  This is the top layer: it may import every other one.
"""
