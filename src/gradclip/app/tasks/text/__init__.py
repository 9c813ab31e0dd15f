"""The text task: toxic-comment classification from a CSV (task, data, tokenizer, metrics)."""
