"""The application room: the command line, the demo pipeline, the HTML report, the live server and the
Neuronpedia export. The top of interp: no other room imports it."""
