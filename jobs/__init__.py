"""Everything that talks to Kafka or Spark: the converter (publish), the streaming job (stream), the batch
re-analysis (reanalyze), and the shared Spark/Kafka plumbing they use."""
