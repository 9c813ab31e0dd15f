"""The version of gradclip: the one place it is written.

The package (``gradclip.__version__``), the distribution's metadata (setuptools reads it
from here), ``gradclip --version`` and the docs site all take it from this line.
"""

__version__ = "0.2.0"
