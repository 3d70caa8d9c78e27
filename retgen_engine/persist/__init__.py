"""Model directories on disk: checksummed manifests, memory-mapped arrays, torch modules as
config.json + model.safetensors."""
