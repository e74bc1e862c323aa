"""The features room: the analysis pass, labels, neurons against features, search and the scorecard.
Imports the rooms below it (model, activations, interventions)."""
