"""The offline local engine: components that ship inside PyPI wheels, no downloads."""
