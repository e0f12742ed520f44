"""The ``qpy`` commands, a module per group of them; ``qpy/cli.py`` puts them in order.

Each command takes its directory, environment, output and master from
``qpy.invocation.current()``, so the same command runs in the ``qpy`` process or inside
the user's master (the command server).
"""
