"""Private utilities shared by every layer: atomic writes, device and dtype resolution, the encoder digest,
facepcl's own folders, load-time validation, shared names and the version. They import nothing else of facepcl."""
