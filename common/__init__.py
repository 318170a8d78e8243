"""What every layer shares, and depends on nothing of capsim: files written atomically, strict JSON."""
