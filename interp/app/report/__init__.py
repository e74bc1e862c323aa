"""HTML dashboards of an analysis artifact (`interp report --analysis DIR --out reports/NAME`).

Modules: html (the page shell), data (what the pages show, as JSON-ready values), write (the
report folder), neurons (the neuron pages of SAEs on MLP neurons); assets/ holds the scripts and
the stylesheet.
"""
