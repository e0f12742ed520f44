#!/usr/bin/env python3
"""The admin's command, as the manual names it; also installed as ``qpy-admin``."""

from qpy_multiuser.admin_cli import main

if __name__ == "__main__":
    main()
