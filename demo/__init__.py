"""The procedural glyph dataset the bundled demo models are trained on."""
