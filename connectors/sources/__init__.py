"""Where log records come from and how they are read: JSONL, Kafka, S3 objects, record formats, redaction."""
