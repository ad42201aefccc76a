"""Stage `base`: write the configured base model as safetensors + tokenizer into models/base/<model>/.

Reads params: model.name, model.weights, model.allow_pickle.
    python -m stages.base models/base/smollm2-135m
"""

import argparse
from pathlib import Path

from medtune.config import load_params
from medtune.console import log, run_main
from medtune.io import atomic_dir, check_free_space
from medtune.modeling import build_base_model
from medtune.plan import saved_weights_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    model = load_params().model
    log.info("Building base model %s from %s", model.name, model.weights.source)
    size = saved_weights_bytes(model)
    if size is None:
        log.warning("Free disk not checked: the size of %s is unknown (no `architecture:` in its config)", model.name)
    else:
        check_free_space(args.out_dir, size, f"The base model {model.name}")
    with atomic_dir(args.out_dir) as tmp:
        origin = build_base_model(model.weights, tmp, allow_pickle=model.allow_pickle)
    log.info("Wrote %s (%s parameters)", args.out_dir, f"{origin['parameters']:,}")


if __name__ == "__main__":
    run_main(main)
