"""Adapter training: TRL (SFT, DPO) with PEFT LoRA."""
