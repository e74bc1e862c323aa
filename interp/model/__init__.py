"""The model room: corpora, the tokenizer, the transformer (built, trained, loaded), its training record
and what differs between TransformerLens versions. The bottom of interp: it imports no other room."""
