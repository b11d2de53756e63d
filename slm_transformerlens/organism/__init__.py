"""A model organism: a small interleaved speech LM trained here (see :mod:`slm_transformerlens.organism.recipe`)."""
