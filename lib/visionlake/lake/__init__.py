"""The lake: its file system, tables, manifests, image format, TFRecord shards and the reader ranks use."""
