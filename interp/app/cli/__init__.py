"""The `interp` command line: `main` lists the command families, `options` defines the options they
share (once each), and each family module builds its commands from the library's functions and
config dataclasses (rendered by sae.options)."""
