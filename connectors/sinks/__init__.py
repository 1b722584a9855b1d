"""Where `taoflow gateway` writes captured exchanges: Kafka, S3 objects, local JSON-lines files."""
