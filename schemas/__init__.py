"""Tessera: persistent personal LoRA adapters over one shared base model."""
