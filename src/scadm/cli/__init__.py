"""`scadm` command line: parse, call the library, print. Errors become one line on stderr.

`main.py` holds the parser and the face commands; each other module adds one group of commands.
"""

from .main import main

__all__ = ["main"]
