"""The model: loading base models and tokenizers (folders, .gguf files, Hub ids), the four strategies, the embedded
default model, and a finished run's trained model."""
