"""The ``gradclip`` training application: models, tasks, the loop, run directories, the CLI.

Imports only torch at package import; optional extras (tqdm, matplotlib, tokenizers, numpy)
are imported lazily by the modules that need them (``pip install 'gradclip[app]'``).
"""
