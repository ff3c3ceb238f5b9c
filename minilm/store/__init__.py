"""Files on disk, the lowest room: atomic writes and pinned, verified downloads. Imports nothing else of minilm."""
