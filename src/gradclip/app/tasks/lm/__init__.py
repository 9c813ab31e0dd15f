"""The language-model task: next character on real text, truncated BPTT (task, built-in text)."""
