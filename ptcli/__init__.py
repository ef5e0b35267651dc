"""ptcli: few-shot text classification with P-tuning on a frozen language model."""

__version__ = "0.1.0"
