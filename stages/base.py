"""Stage `base`: write the configured base model as safetensors + tokenizer into models/base/<model>/.

Reads params: model.name, model.weights.
    python -m stages.base models/base/smollm2-135m
"""

import argparse
from pathlib import Path

from medtune.config import load_params
from medtune.console import log, run_main
from medtune.io import atomic_dir
from medtune.modeling import build_base_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    model = load_params().model
    log.info("Building base model %s from %s", model.name, model.weights.source)
    with atomic_dir(args.out_dir) as tmp:
        origin = build_base_model(model.weights, tmp)
    log.info("Wrote %s (%s parameters)", args.out_dir, f"{origin['parameters']:,}")


if __name__ == "__main__":
    run_main(main)
