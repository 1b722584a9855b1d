"""Raw log items to buffered prompts: parsing, filters, redaction, the streaming loops of Kafka and S3."""
