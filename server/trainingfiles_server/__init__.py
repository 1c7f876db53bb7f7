"""Training File Service: turns enriched conversations into LoRA training files over gRPC."""
