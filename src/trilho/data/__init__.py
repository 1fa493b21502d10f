"""The run's data stage: read and fetch sources into the lake, validate, clean, look for leaks,
curate, and the reference rows the gate scores models on."""
