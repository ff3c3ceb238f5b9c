"""The networks: the model config, attention, the Transformer and its task heads, PEFT, ELECTRA, Hugging Face interop."""
