"""Adapter artifact stores: a local (or shared) directory, or S3."""
