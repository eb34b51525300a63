"""Pure state-dict converters between convergent and other layouts (HF transformers,
Microsoft's official Swin releases). Torch-free to import; each converter module maps
configs and state dicts and nothing else."""
