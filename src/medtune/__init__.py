"""medtune: reproducible LoRA fine-tuning of open LLMs on medical text (DVC + Hydra + HF)."""

from medtune import hub

__version__ = "0.1.0"

hub.start_offline()  # before any library that reads HF_HUB_OFFLINE is imported: see medtune/hub.py
