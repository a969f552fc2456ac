"""Dataset layout, validation and the embedded (generated or bundled) data sets."""
