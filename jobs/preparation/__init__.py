"""Data preparation: sources of labelled images, sample checks, Arrow shards and their manifest, written by Ray tasks."""
