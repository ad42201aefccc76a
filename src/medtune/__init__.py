"""medtune: reproducible LoRA fine-tuning of open LLMs on medical text (DVC + Hydra + HF)."""

__version__ = "0.1.0"
